"""``LearnableSummary``: a summary whose parameters the outer loop steps (``TokenSummary``, ``LatentSummary``), and
where it starts: a same-size baseline (``sampling``) loaded into its parameters, or noise."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Summary
from .sampling import make_baseline


class LearnableSummary(Summary):
    """Base class of the learnable summaries: ``initialize`` starts from the baseline named by ``self.init``;
    a subclass implements ``load_rows`` (peaked on given rows, or following given distributions) and
    ``init_noise``, and calls ``_hold_inputs(inputs)`` in ``__init__``."""

    @torch.no_grad()
    def initialize(self, real: Tensor, generator: torch.Generator | None = None,
                   teacher: nn.Module | None = None) -> None:
        """Start from the same-size baseline named by ``self.init`` built from ``real`` (``(N, ≥L)`` ids; the
        ``teacher`` labels it for ``init="teacher"``), or from noise for ``init="noise"``."""
        init = getattr(self, "init", "random")
        if init == "noise":
            if self.input_ids() is not None:
                raise ValueError(f"{type(self).__name__}: inputs='fixed' needs real rows to read; init='noise' has "
                                 "none")
            self.init_noise(generator)
            return
        fixed = self.input_ids() is not None
        baseline = make_baseline("random" if init == "real" else init, self.vocab_size, self.num_sequences,
                                 self.seq_len, self.padding_idx, real, generator, teacher,
                                 targets="teacher" if fixed else "lifted")
        tokens = baseline.tokens.to(self.device_of())
        self.load_rows(tokens, baseline.probs.to(self.device_of()) if init == "teacher" else None, generator)
        if fixed:
            self.input_tokens.copy_(tokens)

    def _hold_inputs(self, inputs: str) -> None:
        """``inputs='fixed'``: register the ``input_tokens`` buffer (filled by ``initialize``)."""
        if inputs not in ("tied", "fixed"):
            raise ValueError(f"inputs must be 'tied' or 'fixed', got {inputs!r}")
        self.inputs = inputs
        if inputs == "fixed":
            self.register_buffer("input_tokens", torch.zeros(self.num_sequences, self.seq_len, dtype=torch.long))

    def _hold_weights(self, row_weights: bool) -> None:
        """``row_weights``: a learnt weight ``exp(log_weight[i])`` per row (1 at the start), a row parameter."""
        if not isinstance(row_weights, bool):
            raise ValueError(f"row_weights must be true or false, got {row_weights!r}")
        self.row_weights = row_weights
        if row_weights:
            self.log_weight = nn.Parameter(torch.zeros(self.num_sequences))  # (n,)
            self.row_parameters = (*type(self).row_parameters, "log_weight")

    def init_noise(self, generator: torch.Generator | None) -> None:
        """Random parameters (``init="noise"``)."""
        raise NotImplementedError(f"{type(self).__name__} has no noise initialisation")

    def load_rows(self, tokens: Tensor, probs: Tensor | None = None,
                  generator: torch.Generator | None = None) -> None:
        """Set the parameters so that the summary is peaked on ``tokens`` ``(n, L)``, or (when given) follows the
        distributions ``probs`` ``(n, L, V)`` as closely as the parameterisation allows; ``generator`` draws
        anything else random."""
        raise NotImplementedError(f"{type(self).__name__} cannot start from real rows")
