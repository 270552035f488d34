"""Reverse-mode Adam: the exact meta-gradient through T Adam steps without storing the trajectory."""

from __future__ import annotations

import torch

from . import fused_adam
from .base import Params
from .functional import check_adam, check_weight_decay
from .reverse import Adjoint, ReversibleOptimizer, State


class ReverseAdam(ReversibleOptimizer):
    """Adam (``torch.optim.Adam`` semantics, bias-corrected) differentiated by reversing its trajectory.

    Per reversed step: undo the update, recompute that step's gradient on the same batch, and one
    double-backward for ``H·dg`` and ``∂²L/∂hyper∂θ·dg`` (docs/inner.md).

    Example:
        >>> opt = ReverseAdam(lr=1e-3, steps=50)
        >>> result = opt.meta_gradient(inner_loss, outer_loss, params, (Z, M))  # doctest: +SKIP

    Args:
        lr: inner learning rate α.
        betas: Adam's (β1, β2).
        eps: Adam's ε (added to ``sqrt(v̂)``).
        steps: number of inner steps T.
        state_dtype: dtype of θ, m, v and adjoints during forward and reversal (float64 keeps drift tiny).
        checkpoint_every: store exact (θ, m, v) every K steps; ``None`` uses ``checkpoints``.
        checkpoints: evenly spaced exact checkpoints when ``checkpoint_every`` is None (memory constant in T).
        drift_tolerance: largest acceptable reconstruction error of θ at a segment start (None: by dtype).
        on_drift: ``"recompute"`` (replay the segment exactly), ``"warn"`` or ``"raise"``.
        fused: run the update, its undo and the adjoint step as single compiled element-wise kernels
            (``fused_adam``: ~20 s to compile once per process, then far fewer passes over memory; worth it on
            small learners and long runs).
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        steps: int = 10,
        fused: bool = False,
        **reversal,
    ) -> None:
        super().__init__(steps, lr, **reversal)
        self.betas, self.eps = check_adam(betas, eps)
        self.fused = bool(fused)
        self._undone: tuple | None = None  # fused: the buffers at t-1, computed by backprop for undo_buffers

    def torch_optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas, eps=self.eps)  # parity-tested

    def init_buffers(self, params: Params) -> tuple[Params, ...]:
        return ({k: torch.zeros_like(p) for k, p in params.items()},
                {k: torch.zeros_like(p) for k, p in params.items()})

    # The algebra below runs graph-free on every step of the forward and reverse passes, in float64 by
    # default, so it uses in-place multi-tensor (_foreach) kernels: fewer passes over memory, no allocations.

    def step(self, state: State, grads: Params, t: int) -> State:
        if self.fused:
            out = {k: self._kernel("step", t, state.params[k], state.buffers[0][k], state.buffers[1][k], grads[k])
                   for k in state.params}
            return State({k: o[0] for k, o in out.items()}, ({k: o[1] for k, o in out.items()},
                                                               {k: o[2] for k, o in out.items()}))
        beta1, beta2 = self.betas
        bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
        names = list(state.params)
        p, m, v = ([d[k] for k in names] for d in (state.params, *state.buffers))
        g = [grads[k] for k in names]
        torch._foreach_lerp_(m, g, 1.0 - beta1)  # m = β1 m + (1-β1) g
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, value=1.0 - beta2)
        den = torch._foreach_div(v, bc2)
        torch._foreach_sqrt_(den)
        torch._foreach_add_(den, self.eps)
        torch._foreach_addcdiv_(p, m, den, value=-self.lr / bc1)
        return state

    def _den(self, v: list[torch.Tensor], t: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``s = sqrt(v / bc2)`` and ``den = s + eps`` (v clamped at 0 against reconstruction noise). A reversed
        step asks twice for the same ``v`` (``undo_params``, then ``backprop``): the second time is served from a
        one-entry cache holding those very tensors (compared by identity, so never a look-alike) and their version
        counters (so an in-place change misses it); emptied when the meta-gradient returns."""
        cached = getattr(self, "_den_cache", None)
        if (cached is not None and cached[0] == t and len(cached[1]) == len(v)
                and all(a is b and a._version == n for a, b, n in zip(cached[1], v, cached[2]))):
            return cached[3]
        s = torch._foreach_clamp_min(v, 0.0)
        torch._foreach_div_(s, 1.0 - self.betas[1] ** t)
        torch._foreach_sqrt_(s)
        out = s, torch._foreach_add(s, self.eps)
        self._den_cache = (t, list(v), [x._version for x in v], out)
        return out

    def _meta_gradient(self, *args, **kwargs):
        try:
            return super()._meta_gradient(*args, **kwargs)
        finally:
            self._den_cache = self._undone = None

    def _kernel(self, name: str, t: int, *tensors: torch.Tensor):
        """A fused map (``fused_adam``) on one parameter's tensors, flattened."""
        c = fused_adam.constants(self.lr, self.betas, self.eps, t, tensors[0])
        out = fused_adam.kernels()(name, *(x.reshape(-1) for x in tensors), c)
        shape = tensors[0].shape
        return out.view(shape) if isinstance(out, torch.Tensor) else tuple(o.view(shape) for o in out)

    def undo_params(self, state: State, t: int) -> Params:
        if self.fused:
            return {k: self._kernel("undo", t, p, state.buffers[0][k], state.buffers[1][k])
                    for k, p in state.params.items()}
        names = list(state.params)
        m, v = ([d[k] for k in names] for d in state.buffers)
        _, den = self._den(v, t)
        bc1 = 1.0 - self.betas[0] ** t
        prev = torch._foreach_addcdiv([state.params[k] for k in names], m, den, value=self.lr / bc1)
        return dict(zip(names, prev))

    def undo_buffers(self, buffers: tuple[Params, ...], grads: Params, t: int) -> tuple[Params, ...]:
        if self._undone is not None and self._undone[0] == t and self._undone[1] is buffers[0]:
            _, _, m_prev, v_prev = self._undone  # fused: backprop computed them in its pass
            self._undone = None
            buffers[0].update(m_prev)
            buffers[1].update(v_prev)
            return buffers
        beta1, beta2 = self.betas
        names = list(grads)
        m, v = ([d[k] for k in names] for d in buffers)
        g = [grads[k] for k in names]
        torch._foreach_add_(m, g, alpha=-(1.0 - beta1))
        torch._foreach_div_(m, beta1)
        torch._foreach_addcmul_(v, g, g, value=-(1.0 - beta2))
        torch._foreach_div_(v, beta2)
        # Rounding noise in a gradient that is truly zero can push v below 0; sqrt would then be NaN.
        torch._foreach_clamp_min_(v, 0.0)
        return buffers

    def lr_direction(self, state: State, t: int) -> Params:
        names = list(state.params)
        m, v = ([d[k] for k in names] for d in state.buffers)
        _, den = self._den(v, t)
        direction = torch._foreach_div(m, den)
        torch._foreach_mul_(direction, -1.0 / (1.0 - self.betas[0] ** t))  # -(m / bc1) / den
        return dict(zip(names, direction))

    def backprop(self, adj: Adjoint, state: State, grads: Params, t: int) -> Params:
        if self.fused:
            (m, v), (dm, dv) = state.buffers, adj.buffers
            out = {k: self._kernel("adjoint", t, adj.params[k], dm[k], dv[k], m[k], v[k], grads[k]) for k in grads}
            dm.update({k: o[1] for k, o in out.items()})
            dv.update({k: o[2] for k, o in out.items()})
            self._undone = (t, m, {k: o[3] for k, o in out.items()}, {k: o[4] for k, o in out.items()})
            return {k: o[0] for k, o in out.items()}
        beta1, beta2 = self.betas
        bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
        names = list(adj.params)
        d_theta = [adj.params[k] for k in names]
        m, v = ([d[k] for k in names] for d in state.buffers)
        dm, dv = ([d[k] for k in names] for d in adj.buffers)
        g = [grads[k] for k in names]
        s, den = self._den(v, t)
        # ∂θ_t/∂m_t · dθ = -α / (bc1 · den) · dθ
        torch._foreach_addcdiv_(dm, d_theta, den, value=-self.lr / bc1)
        # ∂θ_t/∂v_t · dθ = α (m/bc1) / (den² · 2 s · bc2) · dθ, taken as 0 where s = 0 (there m = 0 too).
        den = torch._foreach_mul(den, den)  # not in place: (s, den) may be cached
        torch._foreach_mul_(den, s)
        coef = torch._foreach_mul(m, d_theta)
        torch._foreach_div_(coef, den)
        for c, sk in zip(coef, s):
            c.masked_fill_(sk == 0, 0.0)
        torch._foreach_add_(dv, coef, alpha=self.lr / (2.0 * bc1 * bc2))
        # dg = (1-β1) dm + 2 (1-β2) g dv
        dg = torch._foreach_mul(dm, 1.0 - beta1)
        torch._foreach_addcmul_(dg, g, dv, value=2.0 * (1.0 - beta2))
        torch._foreach_mul_(dm, beta1)
        torch._foreach_mul_(dv, beta2)
        return dict(zip(names, dg))


class ReverseAdamW(ReverseAdam):
    """AdamW (``torch.optim.AdamW``: decoupled weight decay) differentiated by reversing its trajectory.

    The worked example of the ``ReversibleOptimizer`` contract for an update whose direct θ_{t-1} → θ_t path is
    not the identity: θ_t = c·θ_{t-1} − α·m̂_t/(√v̂_t + ε) with c = 1 − α·λ. Three hooks change from Adam:
    ``step`` scales θ first, ``undo_params`` divides by c, ``param_path`` scales the adjoint of θ by c; and
    ``∂θ_t/∂α`` gains −λ·θ_{t-1}. Checked against ``UnrolledAdamW`` in float64 (``tests/test_inner_parity.py``).

    Args:
        lr: inner learning rate α.
        betas: Adam's (β1, β2).
        eps: Adam's ε.
        weight_decay: λ, decoupled (``lr * weight_decay < 1``).
        steps: number of inner steps T.
        **reversal: as ``ReverseAdam`` (state_dtype, checkpoint_every, checkpoints, drift_tolerance, on_drift).
    """

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, steps: int = 10, **reversal) -> None:
        super().__init__(lr, betas, eps, steps, **reversal)
        self.weight_decay = check_weight_decay(weight_decay, self.lr)

    @property
    def decay(self) -> float:
        return 1.0 - self.lr * self.weight_decay

    def torch_optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)

    def step(self, state: State, grads: Params, t: int) -> State:
        torch._foreach_mul_(list(state.params.values()), self.decay)
        return super().step(state, grads, t)

    def undo_params(self, state: State, t: int) -> Params:
        prev = super().undo_params(state, t)  # c·θ_{t-1}
        return {k: p.div_(self.decay) for k, p in prev.items()}

    def param_path(self, d_theta: Params, state: State, t: int) -> None:
        torch._foreach_mul_(list(d_theta.values()), self.decay)

    def lr_direction(self, state: State, t: int) -> Params:
        adam = super().lr_direction(state, t)  # −m̂/den
        prev = self.undo_params(state, t)
        return {k: adam[k].add_(prev[k], alpha=-self.weight_decay) for k in adam}
