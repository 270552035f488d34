"""Evaluation metrics as torchmetrics ``Metric``s (their sums are synced across DDP ranks).

- ``HitRate`` / ``NDCG``: HR@k and nDCG@k over a **full ranking** of all items (no sampled negatives); one
  relevant item per user, so nDCG@k = 1 / log2(rank + 2) when rank < k (rank 0 = top).
- ``Perplexity``: exp(total NLL / total tokens) over a whole split, padding targets ignored.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from .data.windows import IGNORE_INDEX


def target_rank(scores: Tensor, target: Tensor, exclude: Tensor | None = None) -> Tensor:
    """0-based rank of each target among all candidates: how many score strictly higher.

    Args:
        scores: ``(B, N)`` scores over all candidates.
        target: ``(B,)`` index of the relevant candidate.
        exclude: optional ``(B, N)`` mask of candidates to leave out of the ranking (never the target).
    """
    scores = scores.float()
    if exclude is not None:
        exclude = exclude.clone()
        exclude[torch.arange(len(target)), target] = False
        scores = scores.masked_fill(exclude, float("-inf"))
    target_score = scores.gather(1, target[:, None])  # (B, 1)
    return (scores > target_score).sum(dim=1)


class _RankMetric(Metric):
    higher_is_better = True
    full_state_update = False

    def __init__(self, k: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @abstractmethod
    def _gain(self, rank: Tensor) -> Tensor:
        """Per-example score of a 0-based rank (HR: ``rank < k``; nDCG: ``1/log2(rank + 2)`` within k)."""

    def update(self, scores: Tensor, target: Tensor, exclude: Tensor | None = None) -> None:
        """Args: scores ``(B, N)``, target ``(B,)``, exclude optional ``(B, N)`` mask (e.g. items already seen)."""
        rank = target_rank(scores, target, exclude)
        self.total += self._gain(rank).double().sum()
        self.count += rank.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


class HitRate(_RankMetric):
    """HR@k: fraction of users whose held-out item ranks in the top k. Args: k."""

    def _gain(self, rank: Tensor) -> Tensor:
        return (rank < self.k).double()


class NDCG(_RankMetric):
    """nDCG@k with one relevant item: ``1 / log2(rank + 2)`` if it ranks in the top k, else 0. Args: k."""

    def _gain(self, rank: Tensor) -> Tensor:
        gain = 1.0 / torch.log2(rank.double() + 2.0)
        return torch.where(rank < self.k, gain, torch.zeros_like(gain))


class Perplexity(Metric):
    """exp(total NLL / total tokens) accumulated over batches (and ranks); targets ``IGNORE_INDEX`` skipped."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("nll", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Args: logits ``(..., V)``, target ``(...)`` ids."""
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                              ignore_index=IGNORE_INDEX, reduction="sum")
        self.nll += nll.double()
        self.tokens += (target != IGNORE_INDEX).sum()

    def compute(self) -> Tensor:
        return torch.exp(self.nll / self.tokens) if self.tokens > 0 else torch.tensor(math.nan)
