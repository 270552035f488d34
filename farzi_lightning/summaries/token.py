"""Token-space summary (the ablation): logits Z of shape n×L×V directly, ``S = softmax(Z / τ)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Init, Inputs
from .learnable import LearnableSummary


class TokenSummary(LearnableSummary):
    """O(nLV) parameters; the baseline that ``LatentSummary`` improves upon.

    Args:
        vocab_size: number of tokens V (linked from the data).
        num_sequences: n synthetic sequences.
        seq_len: L tokens per sequence.
        temperature: τ.
        init: the baseline it starts from (``random``, ``head``, ``teacher``; ``real`` = ``random``) or ``noise``.
        init_scale: logit of the real token (and std of the random initialisation); None: log V + 2.
        padding_idx: a token never produced (None: none).
        row_weights: also learn a weight per row: row i's inner loss (and its share of downstream training)
            is multiplied by ``exp(log_weight[i])``, 1 at the start.
        inputs: ``tied`` (the distributions are inputs and targets) or ``fixed`` (the learner reads the initial
            rows' real tokens; the logits are targets only).
    """

    row_parameters = ("z",)
    distribution_tensors = {"z": "logits"}

    def __init__(self, vocab_size: int, num_sequences: int = 50, seq_len: int = 36, temperature: float = 1.0,
                 init: Init = "real", init_scale: float | None = None, padding_idx: int | None = None,
                 inputs: Inputs = "tied", row_weights: bool = False) -> None:
        super().__init__(vocab_size, num_sequences, seq_len, padding_idx)
        self._hold_inputs(inputs)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        # log V + 2 puts ~88% of a one-hot row's mass on its token: peaked, yet not so saturated that the
        # softmax stops passing gradient.
        init_scale = math.log(vocab_size) + 2.0 if init_scale is None else init_scale
        self.temperature, self.init, self.init_scale = temperature, init, init_scale
        self.z = nn.Parameter(torch.randn(num_sequences, seq_len, vocab_size) * init_scale)
        self._hold_weights(row_weights)

    def logits(self, indices: Tensor | None = None) -> Tensor:
        z = self.z if indices is None else self.z[indices]
        return z / self.temperature  # (B, L, V)

    @torch.no_grad()
    def init_noise(self, generator: torch.Generator | None) -> None:
        self.z.copy_(torch.randn(self.z.shape, generator=generator) * self.init_scale)

    @torch.no_grad()
    def load_rows(self, tokens: Tensor, probs: Tensor | None = None,
                  generator: torch.Generator | None = None) -> None:
        if probs is None:
            self.z.zero_().scatter_(-1, tokens[..., None], self.init_scale * self.temperature)
        else:  # log-probabilities, floored so that impossible tokens stay finite
            self.z.copy_(torch.log(probs.clamp_min(math.exp(-3 * self.init_scale))) * self.temperature)
