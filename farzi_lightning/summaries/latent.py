"""Farzi's latent summary: ``S = softmax(Z @ M / τ)`` with Z of shape n×L×d and a shared decoder M of d×V."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Init, Inputs
from .learnable import LearnableSummary


class LatentSummary(LearnableSummary):
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
        init: the baseline it starts from (``random``, ``head``, ``teacher``; ``real`` = ``random``) or ``noise``.
        init_scale: logit scale of the real initialisation (and std of the random one); None: log V + 2.
        padding_idx: a token never produced (None: none).
        row_weights: also learn a weight per row: row i's inner loss (and its share of downstream training)
            is multiplied by ``exp(log_weight[i])``, 1 at the start.
        inputs: ``tied`` (the distributions are inputs and targets) or ``fixed`` (the learner reads the initial
            rows' real tokens; ``softmax(Z @ M)`` is the targets only).
    """

    row_parameters = ("z",)  # M is shared by every row

    def __init__(self, vocab_size: int, num_sequences: int = 50, seq_len: int = 36, latent_dim: int = 64,
                 temperature: float = 1.0, init: Init = "real", init_scale: float | None = None,
                 padding_idx: int | None = None, inputs: Inputs = "tied", row_weights: bool = False) -> None:
        super().__init__(vocab_size, num_sequences, seq_len, padding_idx)
        self._hold_inputs(inputs)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        # log V + 2 puts ~88% of a one-hot row's mass on its token: peaked, yet not so saturated that the
        # softmax stops passing gradient.
        init_scale = math.log(vocab_size) + 2.0 if init_scale is None else init_scale
        self.temperature, self.init, self.init_scale = temperature, init, init_scale
        self.z = nn.Parameter(torch.randn(num_sequences, seq_len, latent_dim) * init_scale / latent_dim**0.5)
        self.m = nn.Parameter(F.normalize(torch.randn(latent_dim, vocab_size), dim=0))
        self._hold_weights(row_weights)

    def logits(self, indices: Tensor | None = None) -> Tensor:
        z = self.z if indices is None else self.z[indices]  # (B, L, d)
        return z @ self.m / self.temperature  # (B, L, d) @ (d, V) -> (B, L, V)

    @torch.no_grad()
    def init_noise(self, generator: torch.Generator | None) -> None:
        self.m.copy_(F.normalize(torch.randn(self.m.shape, generator=generator), dim=0))
        self.z.copy_(torch.randn(self.z.shape, generator=generator) * self.init_scale / self.z.shape[-1] ** 0.5)

    @torch.no_grad()
    def load_rows(self, tokens: Tensor, probs: Tensor | None = None,
                  generator: torch.Generator | None = None) -> None:
        """One-hot rows: M's columns are random unit vectors and ``Z = scale · M[:, token]`` (decodes exactly).
        Distributions: the best rank-d fit of the centred log-probabilities (truncated SVD), so ``Z @ M``
        reproduces them exactly when their rank is at most d (a teacher's logits are ``h @ E^T``)."""
        if probs is None:
            self.m.copy_(F.normalize(torch.randn(self.m.shape, generator=generator), dim=0))
            self.z.copy_(self.m.T[tokens] * self.init_scale * self.temperature)  # (n, L, d)
            return
        logp = torch.log(probs.clamp_min(math.exp(-3 * self.init_scale))).reshape(-1, self.vocab_size)
        logp = logp - logp.mean(-1, keepdim=True)  # softmax ignores a constant per row
        d = self.z.shape[-1]
        if min(logp.shape) <= 4 * d:
            u, s, vh = torch.linalg.svd(logp.double(), full_matrices=False)
            u, s, v = u[:, :d], s[:d], vh[:d].T
        else:  # randomized: exact when the rank is at most d + 8, and far faster on n·L × V matrices
            generator_state = torch.get_rng_state()
            torch.manual_seed(0)
            u, s, v = torch.svd_lowrank(logp.double(), q=d + 8, niter=4)
            torch.set_rng_state(generator_state)
            u, s, v = u[:, :d], s[:d], v[:, :d]
        if len(s) < d:  # d above the matrix's rank bound (a small vocabulary): the extra factors are zero
            pad = d - len(s)
            u, v = F.pad(u, (0, pad)), F.pad(v, (0, pad))
            s = F.pad(s, (0, pad))
        root = s.sqrt()
        self.z.copy_((u * root).reshape(self.z.shape).to(self.z.dtype) * self.temperature ** 0.5)
        self.m.copy_((root[:, None] * v.T).to(self.m.dtype) * self.temperature ** 0.5)
