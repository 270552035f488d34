"""Reverse-mode Adam: the exact meta-gradient through T Adam steps without storing the trajectory."""

from __future__ import annotations

import torch

from .base import Params
from .functional import AdamState, adam_update
from .reverse import ReversibleOptimizer, State, _Adjoint


class ReverseAdam(ReversibleOptimizer):
    """Adam (``torch.optim.Adam`` semantics, bias-corrected) differentiated by reversing its trajectory.

    Per reversed step: undo the update, recompute that step's gradient on the same batch, and one
    double-backward for ``H·dg`` and ``∂²L/∂hyper∂θ·dg`` (DESIGN §1).

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
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        steps: int = 10,
        **reversal,
    ) -> None:
        super().__init__(steps, lr, **reversal)
        beta1, beta2 = betas
        if not (0.0 < beta1 < 1.0 and 0.0 < beta2 < 1.0):
            raise ValueError(f"betas must both lie in (0, 1) for the update to be invertible, got {betas!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.betas = (float(beta1), float(beta2))
        self.eps = float(eps)

    def init_buffers(self, params: Params) -> tuple[Params, ...]:
        return ({k: torch.zeros_like(p) for k, p in params.items()},
                {k: torch.zeros_like(p) for k, p in params.items()})

    def step(self, state: State, grads: Params, t: int) -> State:
        params, (m, v) = adam_update(state.params, grads, AdamState(*state.buffers), t,
                                     lr=self.lr, betas=self.betas, eps=self.eps)
        return State(params, (m, v))

    def _den(self, v: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.sqrt(v.clamp_min(0) / (1.0 - self.betas[1] ** t))
        return s, s + self.eps

    def undo_params(self, state: State, t: int) -> Params:
        m, v = state.buffers
        bc1 = 1.0 - self.betas[0] ** t
        return {k: p + self.lr * (m[k] / bc1) / self._den(v[k], t)[1] for k, p in state.params.items()}

    def undo_buffers(self, buffers: tuple[Params, ...], grads: Params, t: int) -> tuple[Params, ...]:
        beta1, beta2 = self.betas
        m, v = buffers
        for k, g in grads.items():
            m[k].sub_(g, alpha=1.0 - beta1).div_(beta1)
            # Rounding noise in a gradient that is truly zero can push v below 0; sqrt would then be NaN.
            v[k].addcmul_(g, g, value=-(1.0 - beta2)).div_(beta2).clamp_(min=0.0)
        return m, v

    def backprop(self, adj: _Adjoint, state: State, grads: Params, t: int) -> Params:
        beta1, beta2 = self.betas
        bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
        m, v = state.buffers
        dm, dv = adj.buffers
        dg = {}
        for k, d_theta in adj.params.items():
            s, den = self._den(v[k], t)
            dm[k].addcdiv_(d_theta, den, value=-self.lr / bc1)
            # ∂θ_t/∂v_t; 0 where s = 0 (there m = 0 too, so the update does not depend on v).
            coef = torch.where(s > 0, self.lr * (m[k] / bc1) / (den * den * 2.0 * s.clamp_min(1e-300) * bc2),
                               torch.zeros_like(s))
            dv[k].addcmul_(coef, d_theta)
            dg[k] = (1.0 - beta1) * dm[k] + 2.0 * (1.0 - beta2) * grads[k] * dv[k]
            dm[k].mul_(beta1)
            dv[k].mul_(beta2)
        return dg
