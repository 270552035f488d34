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
from torch import Tensor, nn
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


def next_token_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean next-token cross-entropy; ``target`` ids (``IGNORE_INDEX`` skipped) or soft ``(..., V)`` targets."""
    if target.is_floating_point():
        return -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX)


class Evaluator(nn.Module):
    """Real-data metrics for one split, chosen by the batch layout the data modules produce: perplexity for
    text batches ``(x, y)``, HR/nDCG@k for recommendation batches ``(history, target, seen)``.

    Args:
        k: cut-off of HR@k and nDCG@k.
        exclude_seen: rank only items the user has not interacted with.
        sync: gather the sums across DDP ranks on ``compute`` (False for an evaluation run on one rank only,
            which a gather would hang).
        padding_idx: the padding item, never a candidate.
    """

    def __init__(self, k: int = 10, exclude_seen: bool = True, sync: bool = True, padding_idx: int = 0) -> None:
        super().__init__()
        self.k, self.exclude_seen, self.padding_idx = k, exclude_seen, padding_idx
        kwargs = {"sync_on_compute": sync}
        self.ppl, self.hr, self.ndcg = Perplexity(**kwargs), HitRate(k, **kwargs), NDCG(k, **kwargs)

    def update(self, learner: nn.Module, batch: tuple[Tensor, ...]) -> None:
        if len(batch) == 2:  # language modelling
            x, y = batch
            self.ppl.update(learner(x), y)
            return
        history, target, seen = batch
        scores = learner(history)[:, -1]  # (B, V): next-item scores after the whole history
        exclude = seen.clone() if self.exclude_seen else torch.zeros_like(seen)
        exclude[:, self.padding_idx] = True  # padding is never a candidate
        self.hr.update(scores, target, exclude)
        self.ndcg.update(scores, target, exclude)

    def compute(self, prefix: str) -> dict[str, Tensor]:
        out = {}
        if self.ppl.update_count:
            out[f"{prefix}/ppl"] = self.ppl.compute()
        if self.hr.update_count:
            out[f"{prefix}/hr@{self.k}"] = self.hr.compute()
            out[f"{prefix}/ndcg@{self.k}"] = self.ndcg.compute()
        for metric in (self.ppl, self.hr, self.ndcg):
            metric.reset()
        return out
