"""Unrolled references: keep the autograd graph of all T steps (``create_graph=True``). O(T) memory.

They exist to check the reverse-mode optimisers and to benchmark against; they compute in the dtype of the
parameters passed in. The learning rate is a graph leaf too, so ``lr_grad`` is exact autograd.
"""

from __future__ import annotations

import time
from abc import abstractmethod

import torch
from torch import Tensor

from .base import InnerLoss, InnerOptimizer, MetaGradient, OuterLoss, Params, call_loss, check_used
from .functional import adam_init, adam_update, check_adam, check_weight_decay, sgd_init, sgd_update


class _Unrolled(InnerOptimizer):
    """Shared driver; subclasses give the functional update (``functional.py``) and the ``torch.optim`` twin."""

    @abstractmethod
    def _init(self, params: Params):
        """The optimiser state before the first step."""

    @abstractmethod
    def _update(self, params: Params, grads: Params, state, t: int, lr: Tensor):
        """One differentiable step: ``(params, state)`` after update ``t``."""

    def _meta_gradient(
        self, inner_loss: InnerLoss, outer_loss: OuterLoss, params: Params, hyper: tuple[Tensor, ...],
        lr_grad: bool = True,
    ) -> MetaGradient:
        started = time.perf_counter()
        theta = {k: p.clone().requires_grad_(True) for k, p in params.items()}
        dtype = next(iter(params.values())).dtype
        lr = torch.tensor(self.lr, dtype=dtype, device=next(iter(params.values())).device, requires_grad=lr_grad)
        state = self._init(theta)
        losses = []
        for t in range(1, self.steps + 1):
            loss = call_loss(inner_loss, "inner_loss", theta, hyper, t - 1)
            grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True, allow_unused=True)
            grads = {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(theta.items(), grads)}
            theta, state = self._update(theta, grads, state, t, lr)
            losses.append(loss.detach())
        outer = call_loss(outer_loss, "outer_loss", theta)
        reverse_started = time.perf_counter()
        grads = list(torch.autograd.grad(outer, [*hyper, lr] if lr_grad else list(hyper), allow_unused=True))
        d_lr = grads.pop() if lr_grad else None
        check_used(grads, hyper)
        return MetaGradient(grads=tuple(grads), outer_loss=outer.detach(),
                            params={k: v.detach() for k, v in theta.items()}, drift=0.0,
                            inner_loss=torch.stack(losses).mean(),
                            seconds={"forward": reverse_started - started,
                                     "reverse": time.perf_counter() - reverse_started},
                            lr_grad=None if d_lr is None else d_lr.detach().double())


class UnrolledAdam(_Unrolled):
    """Adam through the full unrolled graph. Args as ``ReverseAdam``: lr, betas, eps, steps."""

    weight_decay = 0.0

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 steps: int = 10) -> None:
        super().__init__(steps, lr)
        self.betas, self.eps = check_adam(betas, eps)

    def _init(self, params: Params):
        return adam_init(params)

    def _update(self, params, grads, state, t, lr):
        return adam_update(params, grads, state, t, lr=lr, betas=self.betas, eps=self.eps,
                           weight_decay=self.weight_decay)

    def torch_optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas, eps=self.eps)


class UnrolledAdamW(UnrolledAdam):
    """AdamW (decoupled weight decay) through the full unrolled graph: the reference of ``ReverseAdamW``.
    Args: lr, betas, eps, weight_decay, steps."""

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, steps: int = 10) -> None:
        super().__init__(lr, betas, eps, steps)
        self.weight_decay = check_weight_decay(weight_decay, self.lr)

    def torch_optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)


class UnrolledSGD(_Unrolled):
    """SGD with momentum through the full unrolled graph. Args as ``ReverseSGD``: lr, momentum, steps."""

    def __init__(self, lr: float = 0.1, momentum: float = 0.9, steps: int = 10) -> None:
        super().__init__(steps, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)

    def _init(self, params: Params):
        return sgd_init(params)

    def _update(self, params, grads, state, t, lr):
        return sgd_update(params, grads, state, t, lr=lr, momentum=self.momentum)

    def torch_optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
