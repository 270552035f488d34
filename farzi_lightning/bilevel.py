"""The pieces of the bilevel problem that the module and the callbacks share (no Lightning here).

- ``inner_schedule``: which summary sequences each inner step trains on (a deterministic function of a seed).
- ``inner_loss`` / ``outer_loss``: the closures handed to an inner optimiser.
- ``train_steps``: plain (no-graph) optimiser steps on fixed summary distributions, as the inner loop takes them
  (downstream training, warm starts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .inner import InnerOptimizer
from .metrics import next_token_loss
from .summaries import Feed, Summary


def inner_schedule(num_sequences: int, batch_size: int, steps: int, generator: torch.Generator) -> Tensor:
    """``(steps, B)`` summary rows: consecutive slices of fresh permutations (every row once per pass)."""
    batch_size = min(batch_size or num_sequences, num_sequences)
    passes = -(-steps * batch_size // num_sequences)
    order = torch.cat([torch.randperm(num_sequences, generator=generator) for _ in range(passes)])
    return order[: steps * batch_size].view(steps, batch_size)


def inner_loss(learner: nn.Module, summary: Summary, schedule: Tensor, feed: Feed | None = None) -> Callable:
    """``loss(params, hyper, step)``: next-token cross-entropy of the learner on its summary batch, soft targets,
    the inputs given by ``feed`` (default: soft)."""
    feed = feed or Feed()

    def on_distributions(params: dict[str, Tensor], probs: Tensor, rows: Tensor, weights: Tensor | None) -> Tensor:
        inputs, targets = feed(probs, summary.input_ids(rows))  # (B, L-1, V) each
        logits = functional_call(learner, params, (inputs,))  # (B, L-1, V)
        return next_token_loss(logits, targets, weights)

    return _reading_rows(summary, schedule.__getitem__, on_distributions)


def _reading_rows(summary: Summary, rows: Callable[[int], Tensor],
                  on_distributions: Callable[[dict[str, Tensor], Tensor, Tensor, Tensor | None], Tensor]) -> Callable:
    """``loss(params, hyper, step)`` = ``on_distributions(params, the summary's rows(step), rows(step), their
    weights)``, with what row-sparse meta-gradients need (``farzi_lightning.inner.base``): step t reads the
    summary rows ``rows(t)`` only, and ``on_rows`` takes ``hyper``'s row parameters already cut to them."""

    def loss(params: dict[str, Tensor], hyper: tuple[Tensor, ...], step: int) -> Tensor:
        return on_distributions(params, summary.functional(hyper, rows(step)), rows(step),
                                summary.weights(hyper, rows(step)))

    def on_rows(params: dict[str, Tensor], hyper: tuple[Tensor, ...], step: int) -> Tensor:
        return on_distributions(params, summary.functional(hyper), rows(step), summary.weights(hyper))

    loss.rows, loss.row_hyper, loss.on_rows = rows, summary.row_parameter_positions(), on_rows
    return loss


def stacked_inner_loss(learner: nn.Module, summary: Summary, schedules: Tensor, feed: Feed | None = None) -> Callable:
    """``inner_loss`` of m independent trajectories at once: ``params`` hold m stacked copies ``(m, ...)`` of the
    learner's tensors, copy j trains on ``schedules[j]`` ``(m, steps, B)``, and the loss is the sum of the m losses
    (so each copy's gradient is its own loss's). One batched forward (``torch.func.vmap``) serves the m copies;
    an element-wise inner optimiser on the stacked tensors is then m independent optimisers, and the
    meta-gradient of a summed outer loss is the sum of the m meta-gradients (``OuterStep`` with ``batch_draws``)."""
    feed = feed or Feed()
    m, _, batch = schedules.shape

    def one(params: dict[str, Tensor], probs: Tensor, ids: Tensor | None, weights: Tensor | None) -> Tensor:
        inputs, targets = feed(probs, ids)  # (B, L-1, V) each
        return next_token_loss(functional_call(learner, params, (inputs,)), targets, weights)

    def on_distributions(params: dict[str, Tensor], probs: Tensor, rows: Tensor, weights: Tensor | None) -> Tensor:
        """``probs`` ``(m·B, L, V)``, ``weights`` ``(m·B,)``: the m copies' batches, one after another."""
        per_copy = [probs, summary.input_ids(rows), weights]  # each None, or split into (m, B, ...)
        mapped = [t.reshape(m, batch, *t.shape[1:]) if t is not None else None for t in per_copy]
        dims = tuple(0 if t is not None else None for t in mapped)
        return torch.func.vmap(one, in_dims=(0, *dims))(params, *mapped).sum()

    def rows(step: int) -> Tensor:
        return schedules[:, step].reshape(-1)  # (m·B,): a row read by two copies appears twice

    return _reading_rows(summary, rows, on_distributions)


def outer_loss(learner: nn.Module, x: Tensor, y: Tensor) -> Callable:
    """``loss(params)``: next-token cross-entropy on a real batch (hard targets, padding ignored)."""
    return lambda params: next_token_loss(functional_call(learner, params, (x,)), y)


def make_optimizer(inner: InnerOptimizer, params) -> torch.optim.Optimizer:
    """The optimiser that trains a learner with the inner loop's update (``inner.torch_optimizer``)."""
    return inner.torch_optimizer(params)


def train_steps(learner: nn.Module, rows: Tensor, feed: Feed, optimizer: torch.optim.Optimizer, schedule: Tensor,
                after: Callable[[int], bool | None] | None = None, ids: Tensor | None = None,
                weights: Tensor | None = None) -> int:
    """Train ``learner`` in place on summary distributions ``rows`` ``(n, L, V)``, one optimiser step per row of
    ``schedule`` ``(steps, B)``; ``ids`` ``(n, L)``: input tokens held apart from the distributions (the
    summary's ``input_ids()``; None: the feed derives inputs from ``rows``); ``weights`` ``(n,)``: the rows'
    weights in the loss (the summary's ``weights()``; None: all 1). ``after(step)`` is called after
    each (1-based) step; when it returns True, training stops there. Returns the number of steps taken."""
    step = 0
    for step, batch in enumerate(schedule, 1):
        optimizer.zero_grad(set_to_none=True)
        inputs, targets = feed(rows[batch], None if ids is None else ids[batch])
        next_token_loss(learner(inputs), targets, None if weights is None else weights[batch]).backward()
        optimizer.step()
        if after is not None and after(step):
            break
    return step
