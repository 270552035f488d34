"""What the reversal carries: ``State`` (exact optimiser state: parameters and buffers) and ``Adjoint`` (the running
adjoints of the state, of each hyper tensor and of the learning rate)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import Params


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

    def clone(self, shared: frozenset[int] = frozenset()) -> Adjoint:
        """A copy; the hyper adjoints at positions ``shared`` are the same tensors, not copies (the reversal adds
        to those only once a segment is accepted)."""
        out = Adjoint({k: v.clone() for k, v in self.params.items()},
                       tuple({k: v.clone() for k, v in b.items()} for b in self.buffers),
                       tuple(h if i in shared else h.clone() for i, h in enumerate(self.hyper)), self.lr.clone())
        out.used = list(self.used)
        return out

    def finite(self, skip: frozenset[int] = frozenset()) -> bool:
        """Every adjoint finite (but the hyper adjoints at positions ``skip``). A sum is non-finite exactly when an
        element is (NaN and ±inf propagate; a float64 sum of finite adjoints does not overflow), so one reading
        pass per tensor, no mask."""
        tensors = [*self.params.values(), *(h for i, h in enumerate(self.hyper) if i not in skip),
                   *(v for b in self.buffers for v in b.values())]
        return all(finite_sum(t) for t in tensors)


def finite_sum(t: Tensor) -> bool:
    """Whether every element of ``t`` is finite, by one float64 sum."""
    return bool(torch.isfinite(t.sum(dtype=torch.float64)))
