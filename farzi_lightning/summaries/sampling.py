"""Fixed baselines: real sequences as one-hot "summaries" of the same size (nothing to optimise)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Summary


class RandomSampleSummary(Summary):
    """n real sequences drawn uniformly. Args: vocab_size, num_sequences, seq_len, padding_idx."""

    def __init__(self, vocab_size: int, num_sequences: int = 50, seq_len: int = 36,
                 padding_idx: int | None = None) -> None:
        super().__init__(vocab_size, num_sequences, seq_len, padding_idx)
        self.register_buffer("tokens", torch.zeros(num_sequences, seq_len, dtype=torch.long))

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
