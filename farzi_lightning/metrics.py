"""Evaluation metrics as torchmetrics ``Metric``s (their sums are synced across DDP ranks).

- ``HitRate`` / ``NDCG``: HR@k and nDCG@k over a **full ranking** of all items (no sampled negatives); one
  relevant item per user, so nDCG@k = 1 / log2(rank + 2) when rank < k (rank 0 = top). Ties are split
  evenly: a target tied with t other items takes each of the t + 1 places with probability 1 / (t + 1) (the
  expectation under a random tie-break), so a learner with constant scores gets HR@k = k / N, never 1.
  A NaN or infinite score among the candidates is an error (``NonFiniteScores``), never a hit.
- ``Perplexity``: exp(total NLL / total tokens) over a whole split, padding targets ignored; a NaN or
  infinite loss is an error.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from .data.windows import IGNORE_INDEX


class NonFiniteScores(ValueError):
    """A learner produced NaN or infinite scores (or loss) on real data: its metrics would be meaningless."""


def rank_counts(scores: Tensor, target: Tensor, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """How many candidates score strictly above each target, and how many others tie with it.

    Args:
        scores: ``(B, N)`` scores over all candidates; every candidate left in the ranking must be finite.
        target: ``(B,)`` index of the relevant candidate.
        exclude: optional ``(B, N)`` mask of candidates to leave out of the ranking (never the target).

    Returns ``(above, ties)``, each ``(B,)``: the target's places are ``above .. above + ties`` (0 = top).
    Raises ``NonFiniteScores`` when a candidate's score is NaN or infinite.
    """
    scores = scores.float()
    keep = torch.ones_like(scores, dtype=torch.bool) if exclude is None else ~exclude
    keep[torch.arange(len(target)), target] = True
    bad = keep & ~torch.isfinite(scores)
    if bool(bad.any()):
        rows = int(bad.any(dim=1).sum())
        raise NonFiniteScores(f"{int(bad.sum())} NaN or infinite scores in {rows} of {len(target)} rankings")
    target_score = scores.gather(1, target[:, None])  # (B, 1)
    above = ((scores > target_score) & keep).sum(dim=1)
    ties = ((scores == target_score) & keep).sum(dim=1) - 1  # the target itself is not a tie
    return above, ties


def target_rank(scores: Tensor, target: Tensor, exclude: Tensor | None = None) -> Tensor:
    """0-based rank of each target when ties are broken against it (``above + ties``): the worst place."""
    above, ties = rank_counts(scores, target, exclude)
    return above + ties


def _expected_gain(gains: Tensor, above: Tensor, ties: Tensor) -> Tensor:
    """Mean of ``gains[place]`` over the places ``above .. above + ties`` (``gains`` is 0 past its end)."""
    k = len(gains)
    cumulative = torch.cat([gains.new_zeros(1), gains.cumsum(0)])  # (k + 1,): sum of the first j gains
    lo, hi = above.clamp_max(k), (above + ties + 1).clamp_max(k)
    return (cumulative[hi] - cumulative[lo]) / (ties + 1).to(gains.dtype)


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
    def _gains(self) -> Tensor:
        """``(k,)`` float64: the score of each place 0..k-1 (HR: 1; nDCG: ``1/log2(place + 2)``); 0 beyond."""

    def update(self, scores: Tensor, target: Tensor, exclude: Tensor | None = None) -> None:
        """Args: scores ``(B, N)``, target ``(B,)``, exclude optional ``(B, N)`` mask (e.g. items already seen)."""
        above, ties = rank_counts(scores, target, exclude)
        self.total += _expected_gain(self._gains().to(above.device), above, ties).sum()
        self.count += above.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


class HitRate(_RankMetric):
    """HR@k: fraction of users whose held-out item ranks in the top k. Args: k."""

    def _gains(self) -> Tensor:
        return torch.ones(self.k, dtype=torch.float64)


class NDCG(_RankMetric):
    """nDCG@k with one relevant item: ``1 / log2(rank + 2)`` if it ranks in the top k, else 0. Args: k."""

    def _gains(self) -> Tensor:
        return 1.0 / torch.log2(torch.arange(self.k, dtype=torch.float64) + 2.0)


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
        if not bool(torch.isfinite(nll)):
            raise NonFiniteScores(f"the loss on real data is {float(nll)} (NaN or infinite logits)")
        self.nll += nll.double()
        self.tokens += (target != IGNORE_INDEX).sum()

    def compute(self) -> Tensor:
        return torch.exp(self.nll / self.tokens) if self.tokens > 0 else torch.tensor(math.nan)


def next_token_loss(logits: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy; ``target`` ids (``IGNORE_INDEX`` skipped) or soft ``(B, L, V)`` targets, whose
    rows' mean losses may be weighted by ``weights`` ``(B,)`` (the mean of ``weights[b] · loss of row b``)."""
    if target.is_floating_point():
        per_token = -(target * torch.log_softmax(logits, dim=-1)).sum(-1)  # (B, L)
        if weights is None:
            return per_token.mean()
        return (per_token.mean(-1) * weights).mean()
    if weights is not None:
        raise ValueError("row weights apply to soft targets only")
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
        last = getattr(learner, "predict_last", None)  # a learner may skip projecting the other positions
        scores = last(history) if last is not None else learner(history)[:, -1]  # (B, V): after the whole history
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
