"""Reverse-mode SGD with heavy-ball momentum (Maclaurin et al., 2015), momentum 0 included."""

from __future__ import annotations

import torch

from .base import Params
from .functional import SGDState, sgd_update
from .reverse import Adjoint, ReversibleOptimizer, State


class ReverseSGD(ReversibleOptimizer):
    """SGD (``torch.optim.SGD`` semantics, no dampening) differentiated by reversing its trajectory.

    With momentum μ > 0 an update is undone from the state after it (``θ_{t-1} = θ_t + α b_t``,
    ``b_{t-1} = (b_t − g_t)/μ``). With μ = 0 it cannot be (``g_t`` depends on the θ_{t-1} being sought), so
    the trajectory is replayed with recursive checkpoints instead: memory ``O(log T)`` states, time
    ``O(T log T)`` gradient evaluations, still exact.

    Args:
        lr: inner learning rate α.
        momentum: heavy-ball coefficient μ in [0, 1).
        steps: number of inner steps T.
        state_dtype: dtype of θ, the momentum buffer and adjoints during forward and reversal.
        checkpoint_every: store exact (θ, b) every K steps; ``None`` uses ``checkpoints``.
        checkpoints: evenly spaced exact checkpoints when ``checkpoint_every`` is None.
        drift_tolerance: largest acceptable reconstruction error of θ at a segment start (None: by dtype).
        on_drift: ``"recompute"`` (replay the segment exactly), ``"warn"`` or ``"raise"``.
    """

    def __init__(self, lr: float = 0.1, momentum: float = 0.9, steps: int = 10, **reversal) -> None:
        super().__init__(steps, lr, **reversal)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)

    @property
    def invertible(self) -> bool:
        return self.momentum > 0.0  # without momentum θ_{t-1} cannot be recovered from θ_t: replay instead

    def torch_optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)  # the same update (parity-tested)

    def init_buffers(self, params: Params) -> tuple[Params, ...]:
        return ({k: torch.zeros_like(p) for k, p in params.items()},)

    def step(self, state: State, grads: Params, t: int) -> State:
        params, (buf,) = sgd_update(state.params, grads, SGDState(*state.buffers), t,
                                    lr=self.lr, momentum=self.momentum)
        return State(params, (buf,))

    def undo_params(self, state: State, t: int) -> Params:
        (buf,) = state.buffers
        return {k: p + self.lr * buf[k] for k, p in state.params.items()}

    def undo_buffers(self, buffers: tuple[Params, ...], grads: Params, t: int) -> tuple[Params, ...]:
        (buf,) = buffers
        for k, g in grads.items():
            buf[k].sub_(g).div_(self.momentum)
        return (buf,)

    def lr_direction(self, state: State, t: int) -> Params:
        (buf,) = state.buffers
        return {k: -b for k, b in buf.items()}

    def backprop(self, adj: Adjoint, state: State, grads: Params, t: int) -> Params:
        (db,) = adj.buffers
        dg = {}
        for k, d_theta in adj.params.items():
            db[k].add_(d_theta, alpha=-self.lr)
            dg[k] = db[k].clone()
            db[k].mul_(self.momentum)
        return dg
