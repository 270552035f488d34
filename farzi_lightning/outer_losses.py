"""Outer losses as plug-in components (``model.init_args.outer_loss`` in YAML): what the summary is optimised
for, measured on real data at the trained parameters θ_T.

- ``NextToken``: the next-token cross-entropy on the real batch (the default; hard targets, padding ignored).
- ``TeacherKL``: KL(teacher ‖ learner) at every position of the real batch: the teacher's whole predictive
  distribution as the target, a denser, lower-variance signal than the one real next token.
- ``FeatureMatch``: the mean squared distance between the learner's and the teacher's hidden states (the
  features its output layer reads) on the same real batch, at every position (TD3's feature term).
- ``Weighted``: a weighted sum of outer losses (e.g. next token + 0.5 · teacher KL).

A new outer loss subclasses ``OuterLoss`` and implements ``build(context, x, y) -> loss(params)``; it reads the
run through the ``Context`` (learner, teacher), like start points.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import functional_call

from .context import Context
from .data.windows import IGNORE_INDEX
from .metrics import next_token_loss
from .parts import RecordsInit

Loss = Callable[[dict[str, Tensor]], Tensor]


class OuterLoss(RecordsInit, ABC):
    """Base class: ``build(context, x, y)`` returns ``loss(params) -> scalar`` for one real batch ``x`` ``(B, L)``
    ids, ``y`` ``(B, L)`` next ids (``IGNORE_INDEX`` where there is no target)."""

    @abstractmethod
    def build(self, context: Context, x: Tensor, y: Tensor) -> Loss:
        """The loss of the learner with parameters ``params`` on this batch (differentiable in ``params``)."""


class NextToken(OuterLoss):
    """Next-token cross-entropy on the real batch (what the learner is finally judged by).

    Args:
        last: count only each sequence's last ``last`` targets (None: every target). A recommender is judged on
            the next item after a user's whole history, so ``last: 1`` weighs the positions it is judged at
            instead of every prefix of the history alike.
    """

    def __init__(self, last: int | None = None) -> None:
        if last is not None and (not isinstance(last, int) or isinstance(last, bool) or last < 1):
            raise ValueError(f"NextToken last must be None or an integer >= 1, got {last!r}")
        self.last = last

    def build(self, context: Context, x: Tensor, y: Tensor) -> Loss:
        learner = context.learner
        if self.last is not None:
            keep = y != IGNORE_INDEX  # (B, L)
            from_end = keep.flip(-1).cumsum(-1).flip(-1)  # (B, L): targets at or after each position
            y = torch.where(keep & (from_end <= self.last), y, IGNORE_INDEX)
        return lambda params: next_token_loss(functional_call(learner, params, (x,)), y)


class TeacherKL(OuterLoss):
    """KL(teacher ‖ learner) averaged over the positions of the real batch that have a target: the teacher's
    predictive distribution (at ``temperature``) after the same real prefix is the target at every position.

    Args:
        temperature: τ applied to the teacher's logits (1: its own predictions).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ValueError(f"TeacherKL temperature must be positive, got {temperature}")
        self.temperature = temperature

    def build(self, context: Context, x: Tensor, y: Tensor) -> Loss:
        teacher, learner, keep = _teacher(context, "TeacherKL"), context.learner, y != IGNORE_INDEX  # keep: (B, L)
        dtype = next(iter(learner.parameters())).dtype
        with torch.no_grad():
            logits = teacher(x).to(dtype) / self.temperature  # (B, L, V)
            padding = getattr(learner, "padding_idx", None)
            if padding is not None:
                logits[..., padding] = float("-inf")
            logp = torch.log_softmax(logits, -1)[keep]  # (N, V)
            p = logp.exp()
            support = p > 0  # the padding token (and anything the teacher rules out) carries no mass
            negative_entropy = torch.where(support, p * logp, 0.0).sum(-1)  # (N,)

        def loss(params: dict[str, Tensor]) -> Tensor:
            logq = torch.log_softmax(functional_call(learner, params, (x,))[keep], -1)  # (N, V)
            return (negative_entropy - torch.where(support, p * logq, 0.0).sum(-1)).mean()

        return loss


def _teacher(context: Context, name: str) -> torch.nn.Module:
    teacher = context.teacher()
    if teacher is None:
        raise ValueError(f"model.init_args.outer_loss: {name} needs a full-data model (model.init_args.teacher, "
                         "or a start point with a bank)")
    return teacher


def features(model: torch.nn.Module, x: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
    """The hidden states ``(B, L, D)`` that ``model``'s output layer reads, at its ``feature_site``: ``(submodule
    name, "output" or "input")``, captured by a hook during one forward (with ``params``: a functional call)."""
    site = getattr(model, "feature_site", None)
    if site is None:
        raise ValueError(f"model.init_args.outer_loss: FeatureMatch needs learners that name their features "
                         f"(a feature_site attribute) and a teacher of one model; {type(model).__name__} has none")
    name, where = site
    module, seen = model.get_submodule(name), []
    hook = (module.register_forward_pre_hook(lambda m, args: seen.append(args[0])) if where == "input"
            else module.register_forward_hook(lambda m, args, out: seen.append(out)))
    try:
        model(x) if params is None else functional_call(model, params, (x,))
    finally:
        hook.remove()
    return seen[-1]


class FeatureMatch(OuterLoss):
    """Mean squared distance between the learner's and the teacher's features (``features``: the hidden states
    the output layer reads) after the same real prefix, over the positions that have a target, per feature
    dimension. The teacher must have the learner's width."""

    def build(self, context: Context, x: Tensor, y: Tensor) -> Loss:
        teacher, learner, keep = _teacher(context, "FeatureMatch"), context.learner, y != IGNORE_INDEX
        dtype = next(iter(learner.parameters())).dtype
        with torch.no_grad():
            target = features(teacher, x).to(dtype)[keep]  # (N, D)

        def loss(params: dict[str, Tensor]) -> Tensor:
            mine = features(learner, x, params)[keep]  # (N, D)
            if mine.shape != target.shape:
                raise ValueError(f"model.init_args.outer_loss: FeatureMatch needs the teacher's width; the learner's "
                                 f"features are {mine.shape[-1]}-wide, the teacher's {target.shape[-1]}")
            return (mine - target).pow(2).mean()

        return loss


class Weighted(OuterLoss):
    """``Σ_i weights[i] · losses[i]``.

    Args:
        losses: the outer losses to add.
        weights: one non-negative weight per loss (None: all 1).
    """

    def __init__(self, losses: list[OuterLoss], weights: list[float] | None = None) -> None:
        weights = [1.0] * len(losses) if weights is None else list(weights)
        if not losses or len(weights) != len(losses) or min(weights) < 0:
            raise ValueError(f"Weighted needs one non-negative weight per loss, got {len(losses)} losses and "
                             f"weights {weights}")
        self.losses, self.weights = list(losses), weights

    def build(self, context: Context, x: Tensor, y: Tensor) -> Loss:
        parts = [(w, loss.build(context, x, y)) for w, loss in zip(self.weights, self.losses) if w > 0]
        return lambda params: sum(w * part(params) for w, part in parts)


__all__ = ["FeatureMatch", "NextToken", "OuterLoss", "TeacherKL", "Weighted", "features"]
