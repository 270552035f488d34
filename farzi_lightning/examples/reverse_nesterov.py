"""A new inner optimiser: SGD with Nesterov momentum (``torch.optim.SGD(nesterov=True)``), reversed exactly.

θ_t = θ_{t-1} − α(g_t + μ b_t) with b_t = μ b_{t-1} + g_t. Undoing it would need g_t, which depends on the
θ_{t-1} being sought, so the update is not invertible from the state after it: ``invertible`` is False and the
driver reverses it by replay with recursive checkpoints (memory O(log T) states), still exact. Only the
algebra is written here; ``ReversibleOptimizer`` does the rest.
"""

from __future__ import annotations

import torch

from farzi_lightning.inner import Adjoint, ReversibleOptimizer, State
from farzi_lightning.inner.base import Params


class ReverseNesterov(ReversibleOptimizer):
    """Nesterov SGD differentiated by replaying its trajectory.

    Args:
        lr: inner learning rate α.
        momentum: μ in (0, 1).
        steps: number of inner steps T.
        **reversal: as ``ReversibleOptimizer`` (state_dtype, checkpoint_every, checkpoints, drift_tolerance,
            on_drift).
    """

    def __init__(self, lr: float = 0.1, momentum: float = 0.9, steps: int = 10, **reversal) -> None:
        super().__init__(steps, lr, **reversal)
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum must lie in (0, 1), got {momentum!r}")
        self.momentum = float(momentum)

    @property
    def invertible(self) -> bool:
        return False  # θ_{t-1} needs g_t: replayed, never undone

    def torch_optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=True)

    def init_buffers(self, params: Params) -> tuple[Params, ...]:
        return ({k: torch.zeros_like(p) for k, p in params.items()},)

    def step(self, state: State, grads: Params, t: int) -> State:
        (buf,) = state.buffers
        for k, g in grads.items():
            buf[k].mul_(self.momentum).add_(g)  # b_t = μ b_{t-1} + g_t
            state.params[k].sub_(g + self.momentum * buf[k], alpha=self.lr)  # θ_t = θ_{t-1} − α(g_t + μ b_t)
        return state

    def backprop(self, adj: Adjoint, state: State, grads: Params, t: int) -> Params:
        (db,) = adj.buffers
        dg = {}
        for k, d_theta in adj.params.items():
            db[k].add_(d_theta, alpha=-self.lr * self.momentum)  # through b_t in θ_t
            dg[k] = db[k] - self.lr * d_theta  # g_t enters θ_t directly and through b_t
            db[k].mul_(self.momentum)  # b_{t-1}
        return dg
