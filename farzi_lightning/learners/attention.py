"""A pre-norm causal Transformer block with attention written as plain maths.

``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` have no double backward on CPU (their fused
backward kernels are not differentiable), and the inner optimisers need one; ``softmax(QKᵀ/√d + mask) V``
spelled out does. The key projection has no bias: softmax ignores a constant shift, so such a bias has a
structurally zero gradient made only of rounding noise, which derails the reversal of Adam's second moment.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention. Args: d_model, n_heads, dropout."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_padding: Tensor | None = None) -> Tensor:
        B, L, D = x.shape  # batch, sequence length, model width
        H = self.n_heads
        q = self.query(x).view(B, L, H, D // H).transpose(1, 2)  # (B, H, L, D/H)
        k = self.key(x).view(B, L, H, D // H).transpose(1, 2)
        v = self.value(x).view(B, L, H, D // H).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // H)  # (B, H, L, L)
        allowed = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        if key_padding is not None:  # (B, L): padded keys are hidden, but each position still sees itself
            allowed = allowed & (~key_padding[:, None, None, :] | torch.eye(L, dtype=torch.bool, device=x.device))
        scores = scores.masked_fill(~allowed, float("-inf"))
        attn = self.dropout(torch.softmax(scores, dim=-1))
        y = (attn @ v).transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        return self.out(y)


class Block(nn.Module):
    """Pre-norm block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``. Args: d_model, n_heads, dropout."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model),
                                 nn.Dropout(dropout))

    def forward(self, x: Tensor, key_padding: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), key_padding)
        return x + self.mlp(self.ln2(x))
