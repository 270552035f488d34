"""The reversal driver of ``ReversibleOptimizer`` (``farzi_lightning.inner.reverse``): one meta-gradient's closures,
the replay with checkpoints, the recursive reversal that re-splits a drifting segment, and the drift record
(docs/inner.md, "The reversal")."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from .base import DriftError, InnerLoss, InnerOptimizer, Params, call_loss
from .state import Adjoint, State, finite_sum

_SPLIT = 2  # a drifting segment is replayed as this many sub-segments (2: one extra exact state per level)


def _zero_or(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g.to(like.dtype)


class _Run:
    """One meta-gradient computation: the closures, the drift record and the recursive reversal."""

    def __init__(self, opt: InnerOptimizer, inner_loss: InnerLoss, params: Params, hyper: tuple[Tensor, ...],
                 lr_grad: bool = True):
        self.opt, self.inner_loss, self.hyper = opt, inner_loss, hyper
        self.lr_grad = lr_grad  # accumulate d outer / d lr (where the optimiser gives ``lr_direction``)
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
        # While a segment is on trial (its drift not yet checked), its row-sparse hyper contributions wait in
        # ``pending`` and reach the adjoint only once it is accepted: a rejected segment then needs no copy of the
        # (n, ...) hyper adjoints, and only what it read is checked for finiteness.
        self.pending: _Pending | None = None

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
        """Reverse updates b..a+1, given exact states at a and b; returns the adjoints at a. ``end`` is consumed
        (undone in place: a segment that drifts replays from ``start``, which recomputes the state at b)."""
        opt = self.opt
        if b - a == 1:
            return self._reverse_step(b, start.params, end, adj)[0]
        if opt.invertible:
            saved = adj.clone(shared=self.row_hyper) if opt.on_drift == "recompute" else None
            state, self.pending = end, _Pending(adj.hyper)
            for t in range(b, a, -1):
                adj, state = self._reverse_step(t, None, state, adj)
            pending, self.pending = self.pending, None
            drift = max(float((state.params[k] - start.params[k]).abs().max()) for k in start.params)
            finite = math.isfinite(drift) and adj.finite(skip=self.row_hyper) and pending.finite()
            drift = drift if finite else math.inf
            if drift <= self.tolerance:
                self.drift = max(self.drift, drift)
                return pending.accept(adj)
            message = (f"reversal drift {drift:.3g} over inner steps {a}..{b} exceeds drift_tolerance="
                       f"{self.tolerance:g}" + ("" if finite else " (non-finite values)"))
            if opt.on_drift == "raise" or (opt.on_drift == "warn" and not finite):
                # A non-finite meta-gradient is never handed back, whatever the policy.
                raise DriftError(message + "; use on_drift='recompute', checkpoint_every, or a float64 state_dtype")
            if opt.on_drift == "warn":
                warnings.warn(message, RuntimeWarning, stacklevel=4)
                self.drift = max(self.drift, drift)
                return pending.accept(adj)
            adj = saved
            del end, state, pending  # the failed reconstruction: let it go before the replay allocates exact states
        # Replay [a, b] from its exact start with finer checkpoints (b itself recomputed) and reverse each piece,
        # letting go of each piece's end state once it is reversed.
        keep = sorted({a, b, *(a + round(i * (b - a) / _SPLIT) for i in range(1, _SPLIT))})
        states = self.replay(a, start, keep)
        for lo, hi in zip(reversed(keep[:-1]), reversed(keep[1:])):
            adj = self.reverse(lo, hi, states[lo], states.pop(hi), adj)
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
        direction = opt.lr_direction(state, t) if self.lr_grad else None  # θ_t = θ_{t-1} + lr · direction
        if direction is not None:  # d lr += <dθ_t, direction>
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
                    if self.pending is not None:
                        self.pending.add(i, rows, h)
                    else:
                        adj.hyper[i].index_add_(0, rows.to(adj.hyper[i].device), h.to(adj.hyper[i].dtype))
                else:
                    adj.hyper[i] += h.to(adj.hyper[i].dtype)
                adj.used[i] = True
        if prev_params is not None:
            return adj, None
        return adj, State(params_prev, opt.undo_buffers(state.buffers, g, t))




class _Pending:
    """The row-sparse hyper contributions of a segment on trial: a list of (rows, values) per hyper position while
    they hold fewer elements than the hyper tensor itself, then one dense accumulator of its shape (so a long
    segment holds at most one extra copy of the hyper adjoint, as a copy made before the trial would)."""

    def __init__(self, hyper: list[Tensor]) -> None:
        self.like = hyper
        self.parts: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self.dense: dict[int, Tensor] = {}

    def add(self, i: int, rows: Tensor, h: Tensor) -> None:
        like = self.like[i]
        if i in self.dense:
            self.dense[i].index_add_(0, rows.to(like.device), h.to(like.dtype))
            return
        parts = self.parts.setdefault(i, [])
        parts.append((rows, h))
        if sum(v.numel() for _, v in parts) >= like.numel():
            self.dense[i] = torch.zeros_like(like)
            for r, v in self.parts.pop(i):
                self.dense[i].index_add_(0, r.to(like.device), v.to(like.dtype))

    def finite(self) -> bool:
        return all(finite_sum(v) for parts in self.parts.values() for _, v in parts) and all(
            finite_sum(d) for d in self.dense.values())

    def accept(self, adj: Adjoint) -> Adjoint:
        """Into the adjoint, once the segment's drift check has passed."""
        for i, parts in self.parts.items():
            for rows, h in parts:
                adj.hyper[i].index_add_(0, rows.to(adj.hyper[i].device), h.to(adj.hyper[i].dtype))
        for i, d in self.dense.items():
            adj.hyper[i] += d
        return adj


def _copy(state: State) -> State:
    return State({k: v.clone() for k, v in state.params.items()},
                 tuple({k: v.clone() for k, v in b.items()} for b in state.buffers))
