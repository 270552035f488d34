"""The pieces of the bilevel problem that the module and the callbacks share (no Lightning here).

- ``inner_schedule``: which summary sequences each inner step trains on (a deterministic function of a seed).
- ``inner_loss`` / ``outer_loss``: the closures handed to an inner optimiser.
- ``train_on_summary``: a fresh learner trained on a summary with the inner loop's own schedule (downstream).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .inner import InnerOptimizer, ReverseAdam, ReverseSGD, UnrolledAdam, UnrolledSGD
from .learner import next_token_loss
from .summaries import Summary


def inner_schedule(num_sequences: int, batch_size: int, steps: int, generator: torch.Generator) -> Tensor:
    """``(steps, B)`` summary rows: consecutive slices of fresh permutations (every row once per pass)."""
    batch_size = min(batch_size or num_sequences, num_sequences)
    passes = -(-steps * batch_size // num_sequences)
    order = torch.cat([torch.randperm(num_sequences, generator=generator) for _ in range(passes)])
    return order[: steps * batch_size].view(steps, batch_size)


def inner_loss(learner: nn.Module, summary: Summary, schedule: Tensor) -> Callable:
    """``loss(params, hyper, step)``: next-token cross-entropy of the learner on its summary batch, soft targets."""

    def loss(params: dict[str, Tensor], hyper: tuple[Tensor, ...], step: int) -> Tensor:
        soft = summary.functional(hyper, schedule[step])  # (B, L, V)
        logits = functional_call(learner, params, (soft[:, :-1],))  # (B, L-1, V)
        return next_token_loss(logits, soft[:, 1:])

    return loss


def outer_loss(learner: nn.Module, x: Tensor, y: Tensor) -> Callable:
    """``loss(params)``: next-token cross-entropy on a real batch (hard targets, padding ignored)."""
    return lambda params: next_token_loss(functional_call(learner, params, (x,)), y)


def make_optimizer(inner: InnerOptimizer, params) -> torch.optim.Optimizer:
    """The ``torch.optim`` twin of an inner optimiser (same kind and hyper-parameters)."""
    if isinstance(inner, (ReverseAdam, UnrolledAdam)):
        return torch.optim.Adam(params, lr=inner.lr, betas=inner.betas, eps=inner.eps)
    if isinstance(inner, (ReverseSGD, UnrolledSGD)):
        return torch.optim.SGD(params, lr=inner.lr, momentum=inner.momentum)
    raise TypeError(f"no torch.optim twin for {type(inner).__name__}")


def train_on_summary(learner: nn.Module, summary: Summary, inner: InnerOptimizer, steps: int, batch_size: int,
                     generator: torch.Generator) -> nn.Module:
    """Train ``learner`` (in place) for ``steps`` steps on ``summary`` as the inner loop would; returns it."""
    learner.eval()  # the inner loop runs without dropout (forward and reverse passes must agree)
    optimizer = make_optimizer(inner, learner.parameters())
    with torch.no_grad():
        data = summary().detach()  # (n, L, V)
    for rows in inner_schedule(summary.num_sequences, batch_size, steps, generator):
        optimizer.zero_grad(set_to_none=True)
        soft = data[rows]
        next_token_loss(learner(soft[:, :-1]), soft[:, 1:]).backward()
        optimizer.step()
    return learner
