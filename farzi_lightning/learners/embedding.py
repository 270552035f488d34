"""Token input shared by every learner: hard ids ``(B, L)`` or soft tokens ``(B, L, V)``."""

from __future__ import annotations

from torch import Tensor, nn


class SoftEmbedding(nn.Embedding):
    """An ``nn.Embedding`` that also reads probability vectors: ``soft @ E`` (for one-hot rows, the lookup)."""

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.is_floating_point():
            if tokens.shape[-1] != self.num_embeddings:
                raise ValueError(f"soft tokens have {tokens.shape[-1]} classes in their last dimension, but the "
                                 f"embedding table has {self.num_embeddings} rows")
            return tokens @ self.weight  # (B, L, V) @ (V, D) -> (B, L, D)
        return super().forward(tokens)  # (B, L) -> (B, L, D)


def is_padding(tokens: Tensor, padding_idx: int | None) -> Tensor | None:
    """``(B, L)`` mask of padded positions for hard ids (soft summaries are never padded)."""
    if padding_idx is None or tokens.is_floating_point():
        return None
    return tokens == padding_idx


__all__ = ["SoftEmbedding", "is_padding"]
