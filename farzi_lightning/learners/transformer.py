"""Causal decoder-only Transformer language model reading hard or soft tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import Block
from .base import Learner
from .embedding import SoftEmbedding, is_padding


class TransformerLM(Learner):
    """GPT-style causal LM: token + learned position embeddings, pre-norm blocks, tied output head.

    Args:
        vocab_size: number of tokens V (logits are over V).
        d_model: model width.
        n_layers: number of Transformer blocks.
        n_heads: attention heads per block.
        max_len: longest sequence the position table covers.
        dropout: dropout on embeddings, attention and MLP outputs.
        padding_idx: id of a padding token whose positions are hidden from attention (None: no padding).
    """

    def __init__(self, vocab_size: int, d_model: int = 128, n_layers: int = 2, n_heads: int = 2,
                 max_len: int = 64, dropout: float = 0.1, padding_idx: int | None = None) -> None:
        super().__init__()
        self.vocab_size, self.max_len, self.padding_idx = vocab_size, max_len, padding_idx
        self.embed = SoftEmbedding(vocab_size, d_model, padding_idx=padding_idx)
        self.position = nn.Embedding(max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head_bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(_init_weights)

    #: The hidden states the output layer reads: ``ln_f``'s output (``outer_losses.FeatureMatch``).
    feature_site = ("ln_f", "output")

    def forward(self, tokens: Tensor) -> Tensor:
        """``(B, L)`` ids or ``(B, L, V)`` probabilities → next-token logits ``(B, L, V)``."""
        return self.ln_f(self._hidden(tokens)) @ self.embed.weight.T + self.head_bias  # tied: (B, L, D) @ (D, V)

    def predict_last(self, tokens: Tensor) -> Tensor:
        """Next-token logits after the whole sequence, ``(B, V)``: ``forward(tokens)[:, -1]`` without projecting
        the other L - 1 positions (what ranking evaluation needs)."""
        return self.ln_f(self._hidden(tokens)[:, -1]) @ self.embed.weight.T + self.head_bias  # (B, D) @ (D, V)

    def _hidden(self, tokens: Tensor) -> Tensor:
        L = tokens.shape[1]
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds max_len={self.max_len}")
        padding = is_padding(tokens, self.padding_idx)
        x = self.drop(self.embed(tokens) + self.position.weight[:L])  # (B, L, D)
        for block in self.blocks:
            x = block(x, padding)
        return x  # (B, L, D)


def _init_weights(module: nn.Module) -> None:
    # GPT-2's init: small normal weights keep early logits near uniform.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
