"""Functional Adam and SGD-with-momentum updates over ``dict[str, Tensor]`` parameters.

Pure functions: ``update(params, grads, state, step) -> (params, state)``. They build an autograd graph when
their inputs carry one (the unrolled references differentiate through them) and run graph-free otherwise
(the forward pass of the reverse-mode optimisers). Conventions follow ``torch.optim``: Adam with bias
correction (``weight_decay``: AdamW's decoupled decay), SGD with heavy-ball momentum and no dampening.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

Params = dict[str, Tensor]


class AdamState(NamedTuple):
    """Adam's moment estimates after ``step`` updates."""

    m: Params  # first moment (mean of gradients)
    v: Params  # second moment (mean of squared gradients)


class SGDState(NamedTuple):
    """Heavy-ball momentum buffer after ``step`` updates."""

    buf: Params


def safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` whose derivative at ``x == 0`` is 0 instead of ``inf``.

    The plain derivative ``1 / (2 sqrt(x))`` is ``inf`` at a zero second moment, and ``0 * inf`` turns a whole
    meta-gradient into NaN under double backward. A parameter with zero gradient so far has ``m == 0`` too,
    so its update is 0 whatever ``d sqrt`` is: taking 0 is exact.
    """
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def check_adam(betas: tuple[float, float], eps: float) -> tuple[tuple[float, float], float]:
    """Adam's hyper-parameters, validated (both betas in (0, 1): the reverse pass divides by them)."""
    beta1, beta2 = betas
    if not (0.0 < beta1 < 1.0 and 0.0 < beta2 < 1.0):
        raise ValueError(f"betas must both lie in (0, 1) for the update to be invertible, got {betas!r}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    return (float(beta1), float(beta2)), float(eps)


def check_weight_decay(weight_decay: float, lr: float) -> float:
    """AdamW's decoupled decay, validated: ``0 <= lr·weight_decay < 1`` (the reverse pass divides by
    ``1 - lr·weight_decay``)."""
    if not (weight_decay >= 0 and lr * weight_decay < 1):
        raise ValueError(f"weight_decay must be >= 0 with lr * weight_decay < 1, got {weight_decay!r} (lr {lr})")
    return float(weight_decay)


def adam_init(params: Params) -> AdamState:
    """Zero moments shaped like ``params`` (same dtype and device)."""
    return AdamState({k: torch.zeros_like(p) for k, p in params.items()},
                     {k: torch.zeros_like(p) for k, p in params.items()})


def adam_update(
    params: Params, grads: Params, state: AdamState, step: int, *, lr: float, betas: tuple[float, float],
    eps: float, weight_decay: float = 0.0,
) -> tuple[Params, AdamState]:
    """One Adam step; ``step`` is 1-based (bias corrections ``1 - beta**step``). ``weight_decay`` is AdamW's
    decoupled decay (``torch.optim.AdamW``): θ is first scaled by ``1 - lr·weight_decay``."""
    beta1, beta2 = betas
    bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
    new_params, new_m, new_v = {}, {}, {}
    for name, p in params.items():
        g = grads[name]
        m = beta1 * state.m[name] + (1.0 - beta1) * g
        v = beta2 * state.v[name] + (1.0 - beta2) * g * g
        if weight_decay:
            p = p * (1.0 - lr * weight_decay)
        new_params[name] = p - lr * (m / bc1) / (safe_sqrt(v / bc2) + eps)
        new_m[name], new_v[name] = m, v
    return new_params, AdamState(new_m, new_v)


def sgd_init(params: Params) -> SGDState:
    """A zero momentum buffer shaped like ``params``."""
    return SGDState({k: torch.zeros_like(p) for k, p in params.items()})


def sgd_update(
    params: Params, grads: Params, state: SGDState, step: int, *, lr: float, momentum: float,
) -> tuple[Params, SGDState]:
    """One SGD step with heavy-ball momentum: ``b = momentum * b + g``; ``θ = θ - lr * b``."""
    del step  # SGD has no step-dependent terms; kept for a uniform signature
    new_params, new_buf = {}, {}
    for name, p in params.items():
        b = momentum * state.buf[name] + grads[name]
        new_params[name] = p - lr * b
        new_buf[name] = b
    return new_params, SGDState(new_buf)
