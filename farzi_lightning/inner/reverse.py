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
import math
import time
import warnings
from abc import abstractmethod
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from .base import DriftError, InnerLoss, InnerOptimizer, MetaGradient, OuterLoss, Params, call_loss, check_used

DriftPolicy = Literal["recompute", "warn", "raise"]
_SPLIT = 4  # a drifting segment is replayed as this many sub-segments


class State(NamedTuple):
    """Exact optimiser state after ``step`` updates: parameters and the optimiser's own buffers."""

    params: Params
    buffers: tuple[Params, ...]


class Adjoint:
    """Running adjoints while reversing: ``params`` (of θ_t), ``buffers`` (of the optimiser buffers at t, laid
    out like ``State.buffers``), ``hyper`` (accumulated meta-gradient of each hyper tensor) and ``lr``."""

    def __init__(self, params: Params, buffers: tuple[Params, ...], hyper: tuple[Tensor, ...],
                 lr: Tensor | None = None):
        self.params, self.buffers, self.hyper = params, buffers, list(hyper)
        self.used = [False] * len(hyper)
        self.lr = torch.zeros((), dtype=torch.float64) if lr is None else lr  # adjoint of the learning rate

    def clone(self) -> Adjoint:
        out = Adjoint({k: v.clone() for k, v in self.params.items()},
                       tuple({k: v.clone() for k, v in b.items()} for b in self.buffers),
                       tuple(h.clone() for h in self.hyper), self.lr.clone())
        out.used = list(self.used)
        return out

    def finite(self) -> bool:
        tensors = [*self.params.values(), *self.hyper, *(v for b in self.buffers for v in b.values())]
        return all(bool(torch.isfinite(t).all()) for t in tensors)


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
        self, inner_loss: InnerLoss, outer_loss: OuterLoss, params: Params, hyper: tuple[Tensor, ...]
    ) -> MetaGradient:
        run = _Run(self, inner_loss, params, hyper)
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

        reverse_started = time.perf_counter()
        points = sorted(states)
        for a, b in zip(reversed(points[:-1]), reversed(points[1:])):
            adj = run.reverse(a, b, states[a], states[b], adj)

        check_used([g if used else None for g, used in zip(adj.hyper, adj.used)], hyper)
        return MetaGradient(
            grads=tuple(g.to(h.dtype) for g, h in zip(adj.hyper, hyper)),
            outer_loss=loss.detach(),
            params={k: v.to(params[k].dtype) for k, v in final.params.items()},
            drift=run.drift,
            inner_loss=torch.stack(run.inner_losses).mean(),
            replayed_steps=run.replayed,
            seconds={"forward": reverse_started - started, "reverse": time.perf_counter() - reverse_started},
            lr_grad=adj.lr.detach() if self.lr_direction(final, self.steps) is not None else None,
        )


def _zero_or(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g.to(like.dtype)


class _Run:
    """One meta-gradient computation: the closures, the drift record and the recursive reversal."""

    def __init__(self, opt: ReversibleOptimizer, inner_loss: InnerLoss, params: Params, hyper: tuple[Tensor, ...]):
        self.opt, self.inner_loss, self.hyper = opt, inner_loss, hyper
        self.dtypes = {k: p.dtype for k, p in params.items()}
        self.frozen_hyper = tuple(h.detach() for h in hyper)
        self.drift = 0.0
        self.replayed = 0
        self.tolerance = opt.drift_tolerance
        if self.tolerance is None:
            self.tolerance = 1e-12 if all(d == torch.float64 for d in self.dtypes.values()) else 1e-6
        self.inner_losses: list[Tensor] = []
        sparse = all(hasattr(inner_loss, a) for a in ("rows", "row_hyper", "on_rows"))
        self.row_hyper = frozenset(inner_loss.row_hyper) if sparse else frozenset()

    def hyper_read(self, step: int) -> tuple[Tensor | None, tuple[Tensor, ...]]:
        """The rows inner step ``step`` reads (None: all of every hyper tensor) and the hyper to differentiate:
        for a row-sparse inner loss, fresh leaves holding just those rows of its row-read tensors."""
        if not self.row_hyper:
            return None, self.hyper
        rows = self.inner_loss.rows(step)
        return rows, tuple(h.detach()[rows.to(h.device)].requires_grad_() if i in self.row_hyper else h
                           for i, h in enumerate(self.hyper))

    def cast(self, params: Params, requires_grad: bool) -> Params:
        """θ in the learner's dtype, as fresh leaves."""
        return {k: p.detach().to(self.dtypes[k]).requires_grad_(requires_grad) for k, p in params.items()}

    def replay(self, a: int, start: State, keep: list[int], record_loss: bool = False) -> dict[int, State]:
        """Run updates a+1..max(keep) from the exact ``start``; return the states at the steps in ``keep``."""
        kept, state, end = {a: start}, start, max(keep)
        wanted = set(keep)
        for t in range(a + 1, end + 1):
            theta = self.cast(state.params, requires_grad=True)
            loss = call_loss(self.inner_loss, "inner_loss", theta, self.frozen_hyper, t - 1)
            grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
            grads = {k: _zero_or(g, state.params[k]) for k, g in zip(theta, grads)}
            state = self.opt.step(_copy(state) if t - 1 in kept else state, grads, t)
            if t in wanted:
                kept[t] = state
            if record_loss:
                self.inner_losses.append(loss.detach())
        if not record_loss:
            self.replayed += end - a
        return kept

    def reverse(self, a: int, b: int, start: State, end: State, adj: Adjoint) -> Adjoint:
        """Reverse updates b..a+1, given exact states at a and b; returns the adjoints at a."""
        opt = self.opt
        if b - a == 1:
            return self._reverse_step(b, start.params, end, adj)[0]
        if opt.invertible:
            saved = adj.clone() if opt.on_drift == "recompute" else None
            state = _copy(end)
            for t in range(b, a, -1):
                adj, state = self._reverse_step(t, None, state, adj)
            drift = max(float((state.params[k] - start.params[k]).abs().max()) for k in start.params)
            finite = math.isfinite(drift) and adj.finite()
            drift = drift if finite else math.inf
            if drift <= self.tolerance:
                self.drift = max(self.drift, drift)
                return adj
            message = (f"reversal drift {drift:.3g} over inner steps {a}..{b} exceeds drift_tolerance="
                       f"{self.tolerance:g}" + ("" if finite else " (non-finite values)"))
            if opt.on_drift == "raise" or (opt.on_drift == "warn" and not finite):
                # A non-finite meta-gradient is never handed back, whatever the policy.
                raise DriftError(message + "; use on_drift='recompute', checkpoint_every, or a float64 state_dtype")
            if opt.on_drift == "warn":
                warnings.warn(message, RuntimeWarning, stacklevel=4)
                self.drift = max(self.drift, drift)
                return adj
            adj = saved
        # Replay [a, b] from its exact start with finer checkpoints and reverse each piece.
        keep = sorted({a, b, *(a + round(i * (b - a) / _SPLIT) for i in range(1, _SPLIT))})
        states = self.replay(a, start, keep)
        states[b] = end
        for lo, hi in zip(reversed(keep[:-1]), reversed(keep[1:])):
            adj = self.reverse(lo, hi, states[lo], states[hi], adj)
        return adj

    def _reverse_step(
        self, t: int, prev_params: Params | None, state: State, adj: Adjoint
    ) -> tuple[Adjoint, State | None]:
        """Reverse update ``t``. With ``prev_params`` (exact θ_{t-1}) nothing is undone."""
        opt = self.opt
        params_prev = opt.undo_params(state, t) if prev_params is None else prev_params
        theta = self.cast(params_prev, requires_grad=True)
        rows, hyper = self.hyper_read(t - 1)
        with torch.enable_grad():
            if rows is None:
                loss = call_loss(self.inner_loss, "inner_loss", theta, hyper, t - 1)
            else:
                loss = call_loss(self.inner_loss.on_rows, "inner_loss", theta, hyper, t - 1)
            leaves = list(theta.values())
            grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        g = {k: _zero_or(gk, state.params[k]).detach() for k, gk in zip(theta, grads)}
        direction = opt.lr_direction(state, t)  # θ_t = θ_{t-1} + lr · direction: d lr += <dθ_t, direction>
        if direction is not None:
            adj.lr += sum((adj.params[k].double() * direction[k].double()).sum() for k in direction)
        dg = opt.backprop(adj, state, g, t)
        opt.param_path(adj.params, state, t)
        # One double-backward gives both the Hessian-vector product and the mixed product with the hyper.
        pairs = [(gk, dg[k].to(gk.dtype)) for k, gk in zip(theta, grads) if gk is not None and gk.requires_grad]
        if pairs:
            dot = sum((gk * v).sum() for gk, v in pairs)
            out = torch.autograd.grad(dot, leaves + list(hyper), allow_unused=True)
            for k, h in zip(theta, out[: len(leaves)]):
                if h is not None:
                    adj.params[k] += h.to(adj.params[k].dtype)
            for i, h in enumerate(out[len(leaves):]):
                if h is None:
                    continue
                if rows is not None and i in self.row_hyper:  # only the rows this step read: (B, ...) into (n, ...)
                    adj.hyper[i].index_add_(0, rows.to(adj.hyper[i].device), h.to(adj.hyper[i].dtype))
                else:
                    adj.hyper[i] += h.to(adj.hyper[i].dtype)
                adj.used[i] = True
        if prev_params is not None:
            return adj, None
        return adj, State(params_prev, opt.undo_buffers(state.buffers, g, t))


def _copy(state: State) -> State:
    return State({k: v.clone() for k, v in state.params.items()},
                 tuple({k: v.clone() for k, v in b.items()} for b in state.buffers))


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
