"""``ReverseAdam(fused=True)``: Adam's update, its undo and its adjoint step as single fused element-wise kernels.

The foreach algebra of ``ReverseAdam`` makes 20-30 passes over every parameter tensor per reversed step, in
float64; on a small learner those passes cost as much as the learner's own forward and backward. Here each of the
three maps is one function of whole tensors, compiled by ``torch.compile`` into one loop that reads each input
once (``dynamic=True``: one compilation serves every tensor size; the scalars travel as a tensor, so another
step t or learning rate compiles nothing new). The first call in a process compiles (about 20 s on a CPU);
where compilation is unavailable the same functions run eagerly, with one warning.

The maps (t is 1-based, ``c = [lr, bc1, bc2, eps, β1, β2]`` with bc_i = 1 − β_i^t):

- ``step``: (θ, m, v, g) → (θ', m', v'), Adam's update;
- ``undo``: (θ_t, m_t, v_t) → θ_{t-1};
- ``adjoint``: (dθ, dm, dv, m_t, v_t, g_t) → (dg, dm_{t-1}, dv_{t-1}, m_{t-1}, v_{t-1}): ``ReverseAdam.backprop``
  and ``undo_buffers`` in one pass.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


def step(p: Tensor, m: Tensor, v: Tensor, g: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    lr, bc1, bc2, eps, beta1, beta2 = c.unbind()
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return p - lr / bc1 * m / (torch.sqrt(v / bc2) + eps), m, v


def undo(p: Tensor, m: Tensor, v: Tensor, c: Tensor) -> Tensor:
    lr, bc1, bc2, eps, _, _ = c.unbind()
    return p + lr / bc1 * m / (torch.sqrt(torch.clamp_min(v, 0.0) / bc2) + eps)


def adjoint(d_theta: Tensor, dm: Tensor, dv: Tensor, m: Tensor, v: Tensor, g: Tensor, c: Tensor
            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    lr, bc1, bc2, eps, beta1, beta2 = c.unbind()
    s = torch.sqrt(torch.clamp_min(v, 0.0) / bc2)
    den = s + eps
    dm = dm - lr / bc1 * d_theta / den
    # ∂θ_t/∂v_t · dθ, taken as 0 where s = 0 (there m = 0 too)
    dv = dv + torch.where(s == 0, 0.0, m * d_theta / (den * den * s)) * (lr / (2 * bc1 * bc2))
    dg = (1 - beta1) * dm + 2 * (1 - beta2) * g * dv
    m_prev = (m - (1 - beta1) * g) / beta1
    v_prev = torch.clamp_min((v - (1 - beta2) * g * g) / beta2, 0.0)
    return dg, beta1 * dm, beta2 * dv, m_prev, v_prev


class _Kernels:
    """The three maps, compiled on first use; eager (with one warning) where compilation fails."""

    def __init__(self) -> None:
        self.compiled = {f.__name__: torch.compile(f, dynamic=True) for f in (step, undo, adjoint)}
        self.eager = {f.__name__: f for f in (step, undo, adjoint)}
        self.failed = False

    def __call__(self, name: str, *args: Tensor):
        if not self.failed:
            try:
                return self.compiled[name](*args)
            except Exception as err:  # noqa: BLE001 -- no compiler, an unsupported device: fall back, once
                self.failed = True
                warnings.warn(f"ReverseAdam(fused=True): torch.compile is unavailable here ({type(err).__name__}); "
                              "the fused maps run eagerly (same results, no speed-up)", RuntimeWarning, stacklevel=3)
        return self.eager[name](*args)


_KERNELS: _Kernels | None = None


def kernels() -> _Kernels:
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _Kernels()
    return _KERNELS


def constants(lr: float, betas: tuple[float, float], eps: float, t: int, like: Tensor) -> Tensor:
    """``c`` for step ``t``, in ``like``'s dtype and device."""
    beta1, beta2 = betas
    return torch.tensor([lr, 1.0 - beta1**t, 1.0 - beta2**t, eps, beta1, beta2], dtype=like.dtype, device=like.device)
