"""Ranking metrics and perplexity against hand-computed values and torchmetrics' own implementations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics.retrieval import RetrievalHitRate, RetrievalNormalizedDCG
from torchmetrics.text import Perplexity as TMPerplexity

from farzi_lightning.metrics import NDCG, HitRate, Perplexity, target_rank


def test_hand_computed_ranks_and_metrics():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.2],   # target 1 → rank 0
                           [0.5, 0.1, 0.4, 0.3],   # target 3 → rank 2
                           [0.2, 0.3, 0.4, 0.1]])  # target 3 → rank 3
    target = torch.tensor([1, 3, 3])
    assert target_rank(scores, target).tolist() == [0, 2, 3]
    hr, ndcg = HitRate(k=3), NDCG(k=3)
    hr.update(scores, target)
    ndcg.update(scores, target)
    assert math.isclose(float(hr.compute()), 2 / 3)
    assert math.isclose(float(ndcg.compute()), (1.0 + 1 / math.log2(4) + 0.0) / 3)


def test_excluded_items_leave_the_ranking_but_the_target_never_does():
    scores = torch.tensor([[0.9, 0.8, 0.1]])
    exclude = torch.tensor([[True, False, True]])  # the target (2) is marked too: it must stay
    assert target_rank(scores, torch.tensor([2]), exclude).tolist() == [1]


def test_against_torchmetrics_retrieval():
    torch.manual_seed(0)
    scores, target = torch.randn(50, 30), torch.randint(0, 30, (50,))
    ours_hr, ours_ndcg = HitRate(k=10), NDCG(k=10)
    for chunk in range(0, 50, 16):  # several updates accumulate
        ours_hr.update(scores[chunk:chunk + 16], target[chunk:chunk + 16])
        ours_ndcg.update(scores[chunk:chunk + 16], target[chunk:chunk + 16])
    relevant = F.one_hot(target, 30).bool()
    indexes = torch.arange(50)[:, None].expand(-1, 30)
    their_hr = RetrievalHitRate(top_k=10)(scores.flatten(), relevant.flatten(), indexes=indexes.flatten())
    their_ndcg = RetrievalNormalizedDCG(top_k=10)(scores.flatten(), relevant.flatten(), indexes=indexes.flatten())
    torch.testing.assert_close(ours_hr.compute().float(), their_hr)
    torch.testing.assert_close(ours_ndcg.compute().float(), their_ndcg)


def test_perplexity_hand_computed_and_against_torchmetrics():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    target = torch.tensor([[0, 1]])
    ppl = Perplexity()
    ppl.update(logits, target)
    assert math.isclose(float(ppl.compute()), math.exp(-(math.log(0.5) + math.log(0.8)) / 2), rel_tol=1e-6)

    torch.manual_seed(0)
    logits, target = torch.randn(4, 9, 7), torch.randint(0, 7, (4, 9))
    target[0, :3] = -100  # padding is ignored by both
    ours = Perplexity()
    ours.update(logits[:2], target[:2])
    ours.update(logits[2:], target[2:])
    theirs = TMPerplexity(ignore_index=-100)(logits, target)
    torch.testing.assert_close(ours.compute().float(), theirs, rtol=1e-5, atol=1e-5)
