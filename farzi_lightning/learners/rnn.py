"""LSTM / GRU language model reading hard or soft tokens (Zaremba et al., 2014 style)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .base import Learner
from .embedding import SoftEmbedding


class RNNLM(Learner):
    """Embedding → multi-layer LSTM or GRU → linear head over the vocabulary.

    Args:
        vocab_size: number of tokens V.
        d_model: embedding width (and hidden width when ``hidden`` is None).
        hidden: recurrent hidden width (None: ``d_model``).
        n_layers: stacked recurrent layers.
        cell: ``"lstm"`` or ``"gru"``.
        dropout: dropout on embeddings, between layers and before the head (Zaremba's "small": 0).
        tie_weights: share the embedding table with the output head (needs ``hidden == d_model``).
        max_len: longest sequence expected (kept for a uniform learner interface; RNNs have no hard limit).
    """

    def __init__(self, vocab_size: int, d_model: int = 200, hidden: int | None = None, n_layers: int = 2,
                 cell: Literal["lstm", "gru"] = "lstm", dropout: float = 0.0, tie_weights: bool = False,
                 max_len: int = 1024) -> None:
        super().__init__()
        hidden = hidden or d_model
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        if tie_weights and hidden != d_model:
            raise ValueError(f"tie_weights needs hidden == d_model, got hidden={hidden}, d_model={d_model}")
        self.vocab_size, self.max_len, self.padding_idx = vocab_size, max_len, None
        self.embed = SoftEmbedding(vocab_size, d_model)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(d_model, hidden, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)
        if tie_weights:
            self.head.weight = self.embed.weight
        for p in self.parameters():  # Zaremba et al. initialise uniformly in [-0.1, 0.1]
            nn.init.uniform_(p, -0.1, 0.1)

    #: The hidden states the output layer reads: ``head``'s input (``outer_losses.FeatureMatch``).
    feature_site = ("head", "input")

    def forward(self, tokens: Tensor) -> Tensor:
        """``(B, L)`` ids or ``(B, L, V)`` probabilities → next-token logits ``(B, L, V)``."""
        x = self.drop(self.embed(tokens))  # (B, L, D)
        # cuDNN's RNN kernels have no double backward; the inner loop differentiates twice through soft input.
        with torch.backends.cudnn.flags(enabled=not tokens.is_floating_point()):
            h, _ = self.rnn(x)  # (B, L, H)
        return self.head(self.drop(h))  # (B, L, V)
