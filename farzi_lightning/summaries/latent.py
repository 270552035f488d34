"""Farzi's latent summary: ``S = softmax(Z @ M / τ)`` with Z of shape n×L×d and a shared decoder M of d×V."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Init, Summary


class LatentSummary(Summary):
    """O(nLd + dV) parameters instead of O(nLV): what makes large vocabularies affordable.

    Initialised from real data, the decoder's columns are random unit vectors and each latent is its real
    token's column times ``init_scale``: the argmax decodes to the real sequence exactly and the softmax is
    peaked on it.

    Args:
        vocab_size: number of tokens V (linked from the data).
        num_sequences: n synthetic sequences.
        seq_len: L tokens per sequence.
        latent_dim: d, the latent width (d ≪ V).
        temperature: τ.
        init: ``"real"`` (sequences sampled from the training data) or ``"random"``.
        init_scale: logit scale of the real initialisation (and std of the random one); None: log V + 2.
        padding_idx: a token never produced (None: none).
    """

    def __init__(self, vocab_size: int, num_sequences: int = 50, seq_len: int = 36, latent_dim: int = 64,
                 temperature: float = 1.0, init: Init = "real", init_scale: float | None = None,
                 padding_idx: int | None = None) -> None:
        super().__init__(vocab_size, num_sequences, seq_len, padding_idx)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        # log V + 2 puts ~88% of a one-hot row's mass on its token: peaked, yet not so saturated that the
        # softmax stops passing gradient.
        init_scale = math.log(vocab_size) + 2.0 if init_scale is None else init_scale
        self.temperature, self.init, self.init_scale = temperature, init, init_scale
        self.z = nn.Parameter(torch.randn(num_sequences, seq_len, latent_dim) * init_scale / latent_dim**0.5)
        self.m = nn.Parameter(F.normalize(torch.randn(latent_dim, vocab_size), dim=0))

    def logits(self, indices: Tensor | None = None) -> Tensor:
        z = self.z if indices is None else self.z[indices]  # (B, L, d)
        return z @ self.m / self.temperature  # (B, L, d) @ (d, V) -> (B, L, V)

    @torch.no_grad()
    def initialize(self, real: Tensor, generator: torch.Generator | None = None) -> None:
        self.m.copy_(F.normalize(torch.randn(self.m.shape, generator=generator), dim=0))
        if self.init == "real":
            tokens = self.pick(real, self.num_sequences, self.seq_len, generator)  # (n, L)
            self.z.copy_(self.m.T[tokens] * self.init_scale * self.temperature)  # (n, L, d)
        else:
            self.z.copy_(torch.randn(self.z.shape, generator=generator) * self.init_scale / self.z.shape[-1] ** 0.5)
