"""Metrics computed by hand, independently of ``farzi_lightning.metrics``: plain Python ranking with ties split
evenly, perplexity from float64 log-softmax, and the count floors straight from the data's token lists."""

from __future__ import annotations

import math
from collections import Counter

import torch

from farzi_lightning.data import IGNORE_INDEX


def hit_rate(scores: list[float], target: int, excluded: set[int], k: int = 10) -> float:
    """The expected hit of one ranking: the target's place is uniform over its ties (0 = top)."""
    mine = scores[target]
    kept = [v for i, v in enumerate(scores) if i == target or i not in excluded]
    above = sum(v > mine for v in kept)
    ties = sum(v == mine for v in kept) - 1
    return max(0, min(k, above + ties + 1) - above) / (ties + 1)


def popularity_hr(split, k: int = 10) -> float:
    """HR@k of ranking items by training count (unseen items at 0.5) on the test split: each user's training
    and validation items and the padding item 0 left out."""
    counts = Counter(i for seq in split.train for i in seq)
    scores = [math.log(max(counts.get(i, 0), 0.5)) for i in range(split.num_items + 1)]
    hits = [hit_rate(scores, target, set(history) | {valid, 0}, k)
            for history, valid, target in zip(split.train, split.valid, split.test)]
    return sum(hits) / len(hits)


def unigram_ppl(data) -> float:
    """Perplexity on the test targets of the training words' frequencies (unseen words at 0.5)."""
    counts = Counter(data.streams["train"].tolist())
    logp = [math.log(max(counts.get(i, 0), 0.5)) for i in range(data.vocab_size)]
    norm = math.log(sum(math.exp(v) for v in logp))
    targets = [int(t) for _, y in data.test_dataloader() for t in y.flatten() if int(t) != IGNORE_INDEX]
    return math.exp(-sum(logp[t] - norm for t in targets) / len(targets))


@torch.no_grad()
def learner_metric(learner, data, k: int = 10, max_batches: int | None = None) -> tuple[str, float]:
    """``("ppl", value)`` of a language model or ``("hr@k", value)`` of a recommender on the test split (its
    first ``max_batches`` batches), from the learner's full forward pass (every position, float64), not the
    package's evaluator."""
    learner.eval()
    batches = list(data.test_dataloader())[:max_batches]
    if len(batches[0]) == 2:
        nll, tokens = 0.0, 0
        for x, y in batches:
            logp = torch.log_softmax(learner(x).double(), -1)
            keep = y != IGNORE_INDEX
            nll -= float(logp[keep].gather(-1, y[keep][:, None]).sum())
            tokens += int(keep.sum())
        return "ppl", math.exp(nll / tokens)
    hits = []
    for history, target, seen in batches:
        scores = learner(history)[:, -1].double()  # (B, V): after the whole history
        for row, t, mask in zip(scores.tolist(), target.tolist(), seen):
            hits.append(hit_rate(row, t, {int(i) for i in mask.nonzero().flatten()} | {0}, k))
    return f"hr@{k}", sum(hits) / len(hits)
