"""A new summary: Farzi's latent summary plus a learnt token prior shared by every position,
``softmax(Z @ M + b)``: popular tokens cost no latent capacity."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from farzi_lightning.summaries import LatentSummary


class PriorLatentSummary(LatentSummary):
    """``softmax((Z @ M) / τ + b)`` with ``b`` ``(V,)`` learnt; starts at ``b = 0`` (exactly ``LatentSummary``).

    The contract (``farzi_lightning.contracts``): ``logits(indices)`` (abstract in ``Summary``), and the
    optional ``init_noise`` / ``load_rows`` hooks for ``init`` (inherited here, then ``b`` reset).

    Args: as ``LatentSummary`` (vocab_size, num_sequences, seq_len, latent_dim, temperature, init, init_scale,
    padding_idx).
    """

    def __init__(self, vocab_size: int, num_sequences: int = 50, seq_len: int = 36, latent_dim: int = 64,
                 temperature: float = 1.0, init: str = "real", init_scale: float | None = None,
                 padding_idx: int | None = None) -> None:
        super().__init__(vocab_size, num_sequences, seq_len, latent_dim, temperature, init, init_scale, padding_idx)
        self.prior = nn.Parameter(torch.zeros(vocab_size))

    def logits(self, indices: Tensor | None = None) -> Tensor:
        return super().logits(indices) + self.prior  # (B, L, V) + (V,)

    @torch.no_grad()
    def load_rows(self, tokens: Tensor, probs: Tensor | None = None,
                  generator: torch.Generator | None = None) -> None:
        super().load_rows(tokens, probs, generator)
        self.prior.zero_()
