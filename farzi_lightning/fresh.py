"""A fresh learner trained on a candidate's rows until it stops improving, and scored at its best validation
point: the training half of the downstream protocol (``farzi_lightning.downstream``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from . import seeds
from .bilevel import inner_schedule, train_steps
from .inner import InnerOptimizer
from .metrics import Evaluator, NonFiniteScores
from .summaries import Feed


def make_optimizer(recipe: dict[str, Any], params, inner: InnerOptimizer | None = None) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params``; ``forwardoptimizer`` needs the ``inner`` optimiser itself."""
    kind = recipe["optimizer"]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=recipe["lr"], momentum=recipe["momentum"])
    if kind in ("adam", "adamw"):
        cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
        extra = {"weight_decay": recipe.get("weight_decay", 0.0)} if kind == "adamw" else {}
        return cls(params, lr=recipe["lr"], betas=tuple(recipe["betas"]), eps=recipe["eps"], **extra)
    if inner is None:
        raise ValueError(f"downstream optimizer {kind!r} is the inner optimiser's own update; pass inner")
    optimizer = inner.torch_optimizer(params)
    for group in optimizer.param_groups:
        group["lr"] = recipe["lr"]
    return optimizer


def train_to_patience(learner: nn.Module, rows: Tensor, feed: Feed, optimizer: torch.optim.Optimizer,
                      recipe: dict[str, Any], seed: int, val: DataLoader, final: DataLoader, *, text: bool, k: int,
                      eval_every: int, patience: int | None, val_batches: int | None, ids: Tensor | None = None,
                      label: str = "learner", weights: Tensor | None = None
                      ) -> tuple[dict[str, float], int, list[tuple[int, float]], bool]:
    """Train ``learner`` on ``rows`` ``(n, L, V)`` (inputs ``ids`` where held apart, rows weighted by ``weights``
    where learnt) with the recipe's steps and
    batch size, in the batch order of downstream seed ``seed``; validate every ``eval_every`` steps (and at the
    last) on ``val_batches`` of ``val`` (perplexity, or nDCG@k); stop once ``patience`` checks in a row bring no
    improvement (None: train to the cap); score ``final`` at the best validation point.

    Returns (metrics on ``final``, best step, validation curve, whether training ran to the cap)."""
    key = "ppl" if text else f"ndcg@{k}"
    sign = -1.0 if text else 1.0
    rows = rows.to(next(learner.parameters()).dtype)  # a float64 summary trains float32 learners too
    schedule = inner_schedule(len(rows), recipe["batch_size"] or len(rows), recipe["steps"], seeds.downstream(seed))
    best: tuple[float, int, dict[str, Tensor]] = (-math.inf, 0, {})
    curve: list[tuple[int, float]] = []
    learner.eval()  # as in the inner loop: no dropout (its forward and reverse passes must agree)

    def after(step: int) -> bool:
        nonlocal best
        if step % eval_every != 0 and step != recipe["steps"]:
            return False
        value = checked(lambda: score(learner, val, k, val_batches), f"{label}, step {step}")[key]
        curve.append((step, value))
        if sign * value > best[0]:
            best = (sign * value, step, {name: v.detach().clone() for name, v in learner.state_dict().items()})
        stale = sum(1 for s, _ in curve if s > best[1])  # checks since the best one
        return patience is not None and stale >= patience

    if weights is not None:
        weights = weights.to(rows.dtype)
    taken = train_steps(learner, rows, feed, optimizer, schedule, after, ids=ids, weights=weights)
    learner.load_state_dict(best[2])
    scored = checked(lambda: score(learner, final, k, None), f"{label}, step {best[1]}")
    return scored, best[1], curve, patience is not None and taken == recipe["steps"]


def checked(run: Callable[[], dict[str, float]], where: str) -> dict[str, float]:
    """``run()``, a NaN or infinite score named by ``where`` (learner, candidate, seed, step)."""
    try:
        return run()
    except NonFiniteScores as err:
        raise NonFiniteScores(f"downstream {where}: {err}") from None


@torch.no_grad()
def score(model: nn.Module, loader: DataLoader, k: int, max_batches: int | None) -> dict[str, float]:
    """Real-data metrics of ``model`` on ``loader`` (perplexity, or HR@k and nDCG@k with full ranking)."""
    was_training = model.training
    model.eval()
    device = next(iter(model.buffers()), next(iter(model.parameters()), torch.empty(0))).device
    evaluator = Evaluator(k, sync=False).to(device)  # one rank's own evaluation: no gather
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        evaluator.update(model, tuple(t.to(device) for t in batch))
    model.train(was_training)
    return {name.rpartition("/")[2]: float(v) for name, v in evaluator.compute("x").items()}
