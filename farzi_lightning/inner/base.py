"""The contract every inner optimiser keeps, and the checks on what callers pass it.

``opt.meta_gradient(inner_loss, outer_loss, params, hyper)`` trains ``params`` for ``opt.steps`` steps on
``inner_loss`` and returns ``d outer_loss(θ_T) / d hyper``. No Lightning, no learners, no summaries: only
loss closures and tensors.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..parts import RecordsInit

Params = dict[str, Tensor]
InnerLoss = Callable[[Params, tuple[Tensor, ...], int], Tensor]
"""``inner_loss(params, hyper, step) -> scalar``; ``step`` (0..steps-1) selects the summary batch."""
# An inner loss may also say which rows of which hyper tensors each step reads (a summary batch reads
# ``B`` of its ``n`` sequences): ``rows(step)`` the row indices (dim 0), ``row_hyper`` the positions in
# ``hyper`` of the tensors read by row, and ``on_rows(params, hyper, step)`` the same loss evaluated with those
# tensors already cut to ``rows(step)``. Reverse-mode optimisers then differentiate with respect to the cut rows
# and add the result into just those rows of the meta-gradient (``bilevel.inner_loss`` does this).
OuterLoss = Callable[[Params], Tensor]
"""``outer_loss(params) -> scalar``: the loss on real data at the trained parameters."""


class DriftError(FloatingPointError):
    """The reversed trajectory no longer matches the forward one (see ``drift_tolerance``)."""


@dataclass(frozen=True)
class MetaGradient:
    """What ``meta_gradient`` returns.

    Attributes:
        grads: ``d outer_loss(θ_T) / d hyper[i]``, one tensor per hyper, same shape and dtype.
        outer_loss: the outer loss at ``θ_T`` (detached).
        params: ``θ_T`` (detached, in the dtype of the ``params`` passed in).
        drift: the largest ``max |θ_a reconstructed − θ_a|`` over the reversed segments (0.0 when nothing is
            reconstructed, as in the unrolled references).
        inner_loss: the mean inner loss over the ``steps`` forward steps (detached).
        replayed_steps: forward steps recomputed to repair drift or to reverse a non-invertible update.
        seconds: wall time per phase (``forward``, ``reverse``); on GPU without synchronisation, approximate.
        lr_grad: ``d outer_loss(θ_T) / d lr`` (a float64 scalar), the meta-gradient of the inner learning
            rate (times ``lr``: with respect to ``log lr``); None where the optimiser does not provide it.
    """

    grads: tuple[Tensor, ...]
    outer_loss: Tensor
    params: Params
    drift: float
    inner_loss: Tensor
    replayed_steps: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    lr_grad: Tensor | None = None


class InnerOptimizer(RecordsInit, ABC):
    """Base class: validates arguments, then delegates to ``_meta_gradient``.

    Args:
        steps: number of inner steps ``T`` (at least 1).
        lr: the inner learning rate (positive).
    """

    def __init__(self, steps: int, lr: float) -> None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        self.steps = steps
        self.lr = float(lr)

    def meta_gradient(
        self, inner_loss: InnerLoss, outer_loss: OuterLoss, params: Mapping[str, Tensor], hyper: Sequence[Tensor],
        lr_grad: bool = True,
    ) -> MetaGradient:
        """Train ``params`` for ``steps`` steps on ``inner_loss`` and differentiate ``outer_loss`` w.r.t. ``hyper``.

        Args:
            inner_loss: ``inner_loss(params, hyper, step) -> scalar Tensor``.
            outer_loss: ``outer_loss(params) -> scalar Tensor``.
            params: the start point ``θ0`` (not modified).
            hyper: tensors that require grad (e.g. a summary's ``Z`` and ``M``).
            lr_grad: also return ``lr_grad`` (False skips its per-step work in the reverse optimisers).
        """
        if not callable(inner_loss):
            raise TypeError(f"inner_loss must be callable, got {type(inner_loss).__name__}")
        if not callable(outer_loss):
            raise TypeError(f"outer_loss must be callable, got {type(outer_loss).__name__}")
        params = _check_params(params)
        hyper = _check_hyper(hyper)
        if torch.is_inference_mode_enabled():
            raise RuntimeError("meta_gradient cannot run under torch.inference_mode (autograd is off for good "
                               "there); call it from training code or under torch.enable_grad()")
        with torch.enable_grad():
            result = self._meta_gradient(inner_loss, outer_loss, params, hyper, lr_grad)
        return result

    @abstractmethod
    def _meta_gradient(
        self, inner_loss: InnerLoss, outer_loss: OuterLoss, params: Params, hyper: tuple[Tensor, ...],
        lr_grad: bool = True,
    ) -> MetaGradient: ...

    @abstractmethod
    def torch_optimizer(self, params) -> torch.optim.Optimizer:
        """The ``torch.optim.Optimizer`` that trains a learner with this very update (downstream training and
        warm starts): a ``torch.optim`` twin pinned by a parity test, or the optimiser's own update."""


def _check_params(params: Mapping[str, Tensor]) -> Params:
    if not isinstance(params, Mapping) or len(params) == 0:
        raise TypeError(f"params must be a non-empty dict[str, Tensor], got {type(params).__name__}")
    out = {}
    for name, p in params.items():
        if not isinstance(p, Tensor):
            raise TypeError(f"params[{name!r}] must be a Tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise TypeError(f"params[{name!r}] must be floating point, got {p.dtype}")
        out[name] = p.detach()
    return out


def _check_hyper(hyper: Sequence[Tensor]) -> tuple[Tensor, ...]:
    if isinstance(hyper, Tensor) or not isinstance(hyper, Sequence) or len(hyper) == 0:
        raise TypeError(f"hyper must be a non-empty tuple of Tensors, got {type(hyper).__name__}")
    for i, h in enumerate(hyper):
        if not isinstance(h, Tensor):
            raise TypeError(f"hyper[{i}] must be a Tensor, got {type(h).__name__}")
        if not h.requires_grad:
            raise ValueError(f"hyper[{i}] (shape {tuple(h.shape)}) does not require grad; the meta-gradient is "
                             "taken with respect to every hyper tensor, so pass tensors with requires_grad=True")
    return tuple(hyper)


def call_loss(fn: Callable[..., Tensor], name: str, params: Params, *args) -> Tensor:
    """Call a loss closure; a shape error inside it is re-raised naming the closure and ``params``' shapes."""
    try:
        loss = fn(params, *args)
    except RuntimeError as err:
        text = str(err)
        if "shape" not in text and "size" not in text:
            raise
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in params.items())
        raise ValueError(f"{name} failed on params with shapes {{{shapes}}}: {text}. Check that params match the "
                         "model the loss closure evaluates (and hyper its inputs).") from err
    return scalar(loss, name)


def scalar(loss: Tensor, name: str) -> Tensor:
    """Check that a loss closure returned a scalar Tensor; the error names the closure."""
    if not isinstance(loss, Tensor):
        raise TypeError(f"{name} must return a Tensor, got {type(loss).__name__}")
    if loss.dim() != 0:
        raise ValueError(f"{name} must return a scalar, got a tensor of shape {tuple(loss.shape)}")
    return loss


def check_used(grads: Sequence[Tensor | None], hyper: tuple[Tensor, ...]) -> None:
    """Raise when ``inner_loss`` never touched a hyper tensor (its meta-gradient would be silently zero)."""
    for i, g in enumerate(grads):
        if g is None:
            raise ValueError(f"inner_loss does not depend on hyper[{i}] (shape {tuple(hyper[i].shape)}): its "
                             "meta-gradient would be identically zero; pass only tensors the inner loss uses")
