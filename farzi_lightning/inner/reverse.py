"""Reverse-mode meta-gradients through an invertible optimiser, with memory independent of ``T``.

The forward pass keeps only the final optimiser state plus a fixed number of exact checkpoints; the backward
pass walks the trajectory back by *undoing* each update (docs/inner.md, "The reversal"), recomputing that
step's gradient on the same batch, and pushing the adjoints through one double-backward per step.

Undoing divides by the momentum coefficient every step, so rounding errors grow like ``beta**-T``. Three
defences, all on by default:

1. The optimiser state (θ, m, v) is kept in ``state_dtype`` (float64): the learner still runs in its own
   dtype, on θ cast down, and the reconstructed θ casts down to the very same float32 values as the forward's.
2. Exact checkpoints split the trajectory into segments; the reversal restarts from exact state at every
   segment boundary and measures the drift there.
3. A segment whose drift exceeds ``drift_tolerance`` (or whose adjoints went non-finite) is reversed again
   from its exact start: replayed forward with finer checkpoints, recursively, down to single steps that
   need no undo at all. Memory stays ``O(log T)`` states; time grows only where drift did.
"""

from __future__ import annotations

import copy
import time
from abc import abstractmethod
from typing import Literal

import torch
from torch import Tensor

from .base import InnerLoss, InnerOptimizer, MetaGradient, OuterLoss, Params, call_loss, check_used
from .reversal import _Run, _zero_or
from .state import Adjoint, State

DriftPolicy = Literal["recompute", "warn", "raise"]


class ReversibleOptimizer(InnerOptimizer):
    """The public contract of a reverse-mode inner optimiser: subclasses supply the update's algebra, this class
    the checkpointed, drift-checked reversal (``docs/extending.md`` walks through ``ReverseAdamW``).

    An update maps the state after ``t-1`` steps, ``State(θ_{t-1}, buffers_{t-1})``, and the gradient
    ``g_t = ∇L(θ_{t-1})`` to ``State(θ_t, buffers_t)``. Hooks (all graph-free; ``t`` is 1-based):

    - ``init_buffers(params)``: the buffers before the first step;
    - ``step(state, grads, t)``: the update (may work in place);
    - ``undo_params(state, t)`` / ``undo_buffers(buffers, grads, t)``: θ_{t-1} and buffers_{t-1} from the
      state after the update (only when ``invertible``; otherwise the trajectory is replayed);
    - ``backprop(adj, state, grads, t)``: push ``Adjoint`` through the update's dependence on the buffers and
      on ``g_t``: return ``dg_t`` and leave ``adj.buffers`` as the adjoints of buffers_{t-1};
    - ``param_path(d_theta, state, t)``: the direct θ_{t-1} → θ_t path applied to ``adj.params`` (identity by
      default; decoupled weight decay scales it by ``1 - lr·wd``);
    - ``lr_direction(state, t)``: ``∂θ_t/∂lr``, for the learning rate's meta-gradient (optional);
    - ``torch_optimizer(params)``: the optimiser that trains learners downstream with the same update
      (default: ``ForwardOptimizer``, this class's own ``step``; a ``torch.optim`` twin where one exists,
      pinned by ``tests/test_inner_parity.py``).

    Args:
        steps: number of inner steps ``T``.
        lr: inner learning rate.
        state_dtype: dtype of θ, the optimiser buffers and the adjoints during forward and reversal.
        checkpoint_every: store exact state every K steps (memory ``O(T/K)``); ``None`` uses ``checkpoints``.
        checkpoints: when ``checkpoint_every`` is None, this many evenly spaced exact checkpoints (memory
            independent of ``T``); 0 reverses the whole trajectory in one segment.
        drift_tolerance: largest acceptable ``max |θ_a reconstructed − θ_a|`` at a segment start. ``None``:
            1e-12 for float64 learners, 1e-6 otherwise (a few float32 ulps of a unit-scale weight). With Adam's
            default eps=1e-8, weights whose gradient is near zero make the meta-gradient sensitive to tiny
            reconstruction errors, so the tolerance sits near the learner's own precision.
        on_drift: what to do above the tolerance: ``"recompute"`` the segment exactly (default), ``"warn"`` and
            keep the result, or ``"raise"`` a ``DriftError``.
    """

    @property
    def invertible(self) -> bool:
        """False when an update cannot be undone from the state after it (SGD without momentum); such
        optimisers are reversed by replay with recursive checkpoints instead."""
        return True

    def __init__(
        self,
        steps: int,
        lr: float,
        *,
        state_dtype: torch.dtype = torch.float64,
        checkpoint_every: int | None = None,
        checkpoints: int = 3,
        drift_tolerance: float | None = None,
        on_drift: DriftPolicy = "recompute",
    ) -> None:
        super().__init__(steps, lr)
        if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be None or an integer >= 1, got {checkpoint_every!r}")
        if not isinstance(checkpoints, int) or checkpoints < 0:
            raise ValueError(f"checkpoints must be an integer >= 0, got {checkpoints!r}")
        if drift_tolerance is not None and not drift_tolerance > 0:
            raise ValueError(f"drift_tolerance must be positive, got {drift_tolerance!r}")
        if on_drift not in ("recompute", "warn", "raise"):
            raise ValueError(f"on_drift must be 'recompute', 'warn' or 'raise', got {on_drift!r}")
        if not (isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point):
            raise TypeError(f"state_dtype must be a floating torch.dtype, got {state_dtype!r}")
        self.state_dtype = state_dtype
        self.checkpoint_every = checkpoint_every
        self.checkpoints = checkpoints
        self.drift_tolerance = drift_tolerance
        self.on_drift = on_drift

    # ---- the update's algebra (no graph; may work in place on tensors the caller owns) ----

    @abstractmethod
    def init_buffers(self, params: Params) -> tuple[Params, ...]:
        """Optimiser buffers before the first step."""

    @abstractmethod
    def step(self, state: State, grads: Params, t: int) -> State:
        """Update ``t`` (1-based): state after ``t-1`` updates and ``g_t`` → state after ``t`` updates."""

    def undo_params(self, state: State, t: int) -> Params:
        """θ_{t-1} from the state after update ``t`` (needed only when ``invertible``)."""
        raise NotImplementedError(f"{type(self).__name__} is invertible but does not implement undo_params")

    def undo_buffers(self, buffers: tuple[Params, ...], grads: Params, t: int) -> tuple[Params, ...]:
        """Buffers after ``t-1`` updates from those after ``t`` and ``g_t`` (needed only when ``invertible``)."""
        raise NotImplementedError(f"{type(self).__name__} is invertible but does not implement undo_buffers")

    def lr_direction(self, state: State, t: int) -> Params | None:
        """``∂θ_t / ∂lr`` from the state after update ``t`` (the update per unit learning rate); None: the
        optimiser gives no learning-rate meta-gradient."""
        return None

    @abstractmethod
    def backprop(self, adj: Adjoint, state: State, grads: Params, t: int) -> Params:
        """Push adjoints back through update ``t``: returns ``dg_t`` and sets ``adj.buffers`` to those of t-1.

        ``adj.params`` is the adjoint of θ_t and must be left as it is: ``param_path`` then carries it along
        the direct θ_{t-1} → θ_t path, and the driver adds the Hessian path ``(∂g_t/∂θ_{t-1})ᵀ dg_t``.
        """

    def param_path(self, d_theta: Params, state: State, t: int) -> None:
        """In place: ``d_theta`` (adjoint of θ_t) → its part through ``∂θ_t/∂θ_{t-1}`` holding the buffers and
        the gradient fixed. The identity for updates of the form θ_t = θ_{t-1} − u(buffers_t)."""

    def torch_optimizer(self, params) -> torch.optim.Optimizer:
        """What trains a learner downstream with this very update: ``ForwardOptimizer`` over ``step``."""
        return ForwardOptimizer(params, self)

    # ---- driver ----

    def _boundaries(self) -> list[int]:
        T = self.steps
        if self.checkpoint_every is not None:
            return sorted({*range(0, T, self.checkpoint_every), T})
        n = min(self.checkpoints, T - 1)
        return sorted({0, T, *(round(i * T / (n + 1)) for i in range(1, n + 1))})

    def _meta_gradient(
        self, inner_loss: InnerLoss, outer_loss: OuterLoss, params: Params, hyper: tuple[Tensor, ...],
        lr_grad: bool = True,
    ) -> MetaGradient:
        run = _Run(self, inner_loss, params, hyper, lr_grad)
        started = time.perf_counter()
        theta0 = {k: p.to(self.state_dtype) for k, p in params.items()}
        start = State(theta0, self.init_buffers(theta0))
        states = run.replay(0, start, self._boundaries(), record_loss=True)
        final = states[self.steps]

        theta_T = run.cast(final.params, requires_grad=True)
        loss = call_loss(outer_loss, "outer_loss", theta_T)
        d_theta = torch.autograd.grad(loss, list(theta_T.values()), allow_unused=True)
        adj = Adjoint({k: _zero_or(g, final.params[k]) for (k, g) in zip(theta_T, d_theta)},
                       tuple({k: torch.zeros_like(v) for k, v in b.items()} for b in final.buffers),
                       tuple(torch.zeros_like(h, dtype=self.state_dtype) for h in hyper),
                       torch.zeros((), dtype=torch.float64, device=next(iter(final.params.values())).device))

        gives_lr = lr_grad and self.lr_direction(final, self.steps) is not None
        theta_final = {k: v.to(params[k].dtype) for k, v in final.params.items()}
        loss = loss.detach()  # its graph would hold the θ_T leaves
        del final, theta_T, d_theta
        reverse_started = time.perf_counter()
        points = sorted(states)
        for a, b in zip(reversed(points[:-1]), reversed(points[1:])):
            adj = run.reverse(a, b, states[a], states.pop(b), adj)  # each end state freed once reversed

        check_used([g if used else None for g, used in zip(adj.hyper, adj.used)], hyper)
        return MetaGradient(
            grads=tuple(g.to(h.dtype) for g, h in zip(adj.hyper, hyper)),
            outer_loss=loss.detach(),
            params=theta_final,
            drift=run.drift,
            inner_loss=torch.stack(run.inner_losses).mean(),
            replayed_steps=run.replayed,
            seconds={"forward": reverse_started - started, "reverse": time.perf_counter() - reverse_started},
            lr_grad=adj.lr.detach() if gives_lr else None,
        )


class ForwardOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that applies a ``ReversibleOptimizer``'s own ``step`` algebra (in the
    parameters' dtype), so an inner optimiser without a ``torch.optim`` twin still trains learners downstream
    exactly as the inner loop does.

    Args:
        params: parameters (or parameter groups) to optimise.
        inner: the reversible optimiser whose update to apply (its ``lr`` is the group's default).
    """

    def __init__(self, params, inner: ReversibleOptimizer) -> None:
        super().__init__(params, {"lr": inner.lr})
        self.inner = inner

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            inner = copy.copy(self.inner)
            inner.lr = group["lr"]  # a group's (or a scheduler's) rate, as torch.optim would take it
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"] = 0
                    state["buffers"] = self.inner.init_buffers({"p": p.detach()})
                state["t"] += 1
                current = State({"p": p.detach().clone()}, state["buffers"])
                out = inner.step(current, {"p": p.grad.detach()}, state["t"])
                p.copy_(out.params["p"])
                state["buffers"] = out.buffers
        return loss
