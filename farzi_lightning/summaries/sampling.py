"""Same-size baselines: real sequences as "summaries" of the same size (nothing to optimise).

- ``RandomSampleSummary``: n real sequences drawn uniformly, one-hot.
- ``HeadSampleSummary``: the n most active users' (or most common) sequences, one-hot.
- ``TeacherSampleSummary``: random real sequences whose targets are a full-data model's predictive
  distributions (knowledge distillation on a sample); the inputs are the real tokens. ``targets="teacher"``
  keeps the teacher's own distributions (inputs held apart); ``"lifted"`` is the one-distribution form, the
  real token lifted above the teacher's top so that the argmax reads the real row.

Every baseline holds its rows as ``tokens`` and reads them as inputs (``input_ids``).

``make_baseline(name, ...)`` builds any of them by name; learnable summaries start from one (``init``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Summary

BASELINES = ("random", "head", "teacher")


class RandomSampleSummary(Summary):
    """n real sequences drawn uniformly. Args: vocab_size, num_sequences, seq_len, padding_idx."""

    def __init__(self, vocab_size: int, num_sequences: int = 50, seq_len: int = 36,
                 padding_idx: int | None = None) -> None:
        super().__init__(vocab_size, num_sequences, seq_len, padding_idx)
        self.register_buffer("tokens", torch.zeros(num_sequences, seq_len, dtype=torch.long))

    def input_ids(self, indices: Tensor | None = None) -> Tensor:
        return self.tokens if indices is None else self.tokens[indices]

    def logits(self, indices: Tensor | None = None) -> Tensor:
        """0 at the sampled token, -inf elsewhere (``forward`` returns the one-hot rows directly)."""
        return torch.log(self.forward(indices))

    def forward(self, indices: Tensor | None = None) -> Tensor:
        tokens = self.tokens if indices is None else self.tokens[indices]
        return F.one_hot(tokens, self.vocab_size).float()

    @torch.no_grad()
    def initialize(self, real: Tensor, generator: torch.Generator | None = None) -> None:
        self.tokens.copy_(self.pick(real, self.num_sequences, self.seq_len, generator))


class HeadSampleSummary(RandomSampleSummary):
    """The n "head" sequences: most non-padding tokens (most active users), then most frequent tokens.
    Args: vocab_size, num_sequences, seq_len, padding_idx."""

    @torch.no_grad()
    def initialize(self, real: Tensor, generator: torch.Generator | None = None) -> None:
        cut = real[:, -self.seq_len:]
        pad = -1 if self.padding_idx is None else self.padding_idx
        frequency = torch.bincount(cut.flatten(), minlength=self.vocab_size).float()
        activity = (cut != pad).sum(1).float()
        common = frequency[cut].mean(1) / frequency.max()  # in [0, 1]: breaks ties between equally long rows
        order = torch.argsort(activity + common, descending=True)
        rows = order[: self.num_sequences]
        if len(rows) < self.num_sequences:
            rows = rows.repeat(-(-self.num_sequences // len(rows)))[: self.num_sequences]
        self.tokens.copy_(cut[rows])


class TeacherSampleSummary(RandomSampleSummary):
    """Random real sequences labelled by a teacher: position t's target is the teacher's prediction after the
    real tokens before t; the learner reads the real tokens. Position 0 (never a target) is the real token,
    one-hot.

    Args:
        vocab_size, num_sequences, seq_len, padding_idx: as ``Summary``.
        margin: ``targets="lifted"``: how far above the teacher's top logit the real token is lifted.
        targets: ``teacher`` (the teacher's own distributions) or ``lifted`` (the real token on top, so that
            one distribution per position can serve as input and target).
    """

    distribution_tensors = {"probs": "probs"}

    def __init__(self, vocab_size: int, num_sequences: int = 50, seq_len: int = 36,
                 padding_idx: int | None = None, margin: float = 0.1,
                 targets: Literal["teacher", "lifted"] = "teacher") -> None:
        super().__init__(vocab_size, num_sequences, seq_len, padding_idx)
        if targets not in ("teacher", "lifted"):
            raise ValueError(f"targets must be 'teacher' or 'lifted', got {targets!r}")
        self.margin, self.targets = margin, targets
        self.register_buffer("probs", torch.zeros(num_sequences, seq_len, vocab_size))

    def forward(self, indices: Tensor | None = None) -> Tensor:
        return self.probs if indices is None else self.probs[indices]

    @torch.no_grad()
    def label(self, teacher: nn.Module, batch_size: int = 64) -> None:
        """Fill the distributions from ``teacher`` (a learner mapping ``(B, L)`` ids to ``(B, L, V)`` logits)."""
        teacher_was_training = teacher.training
        teacher.eval()
        for start in range(0, self.num_sequences, batch_size):
            tokens = self.tokens[start: start + batch_size]
            logits = teacher(tokens[:, :-1]).float()  # (B, L-1, V)
            if self.padding_idx is not None:
                logits[..., self.padding_idx] = float("-inf")
            if self.targets == "lifted":
                real = tokens[:, 1:, None]  # (B, L-1, 1)
                lifted = torch.maximum(logits.gather(-1, real), logits.max(-1, keepdim=True).values + self.margin)
                logits.scatter_(-1, real, lifted)
            self.probs[start: start + batch_size, 1:] = torch.softmax(logits, -1)
            self.probs[start: start + batch_size, 0] = F.one_hot(tokens[:, 0], self.vocab_size).float()
        teacher.train(teacher_was_training)


def make_baseline(name: str, vocab_size: int, num_sequences: int, seq_len: int, padding_idx: int | None,
                  real: Tensor, generator: torch.Generator | None = None, teacher: nn.Module | None = None,
                  targets: Literal["teacher", "lifted"] = "teacher") -> RandomSampleSummary:
    """The same-size baseline ``name`` (``random``, ``head``, ``teacher``) built from ``real`` ``(N, ≥L)`` ids;
    ``targets``: the teacher baseline's form (``TeacherSampleSummary``)."""
    classes = {"random": RandomSampleSummary, "head": HeadSampleSummary, "teacher": TeacherSampleSummary}
    if name not in classes:
        raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    if name == "teacher" and teacher is None:
        raise ValueError("the teacher baseline needs a full-data model (model.init_args.teacher, or a "
                         "TrajectoryStart whose bank's last checkpoint serves as teacher)")
    extra = {"targets": targets} if name == "teacher" else {}
    baseline = classes[name](vocab_size, num_sequences, seq_len, padding_idx, **extra)
    baseline.initialize(real, generator)
    if name == "teacher":
        device = next(teacher.parameters()).device
        baseline.to(device).label(teacher)
    return baseline
