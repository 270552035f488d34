"""One algebra per optimiser: the reverse optimisers' forward ``step``, the functional updates the unrolled
references differentiate, and the ``torch.optim`` twin that trains learners downstream agree on a grid of
hyper-parameters and dtypes (as torchopt pins its aliases to torch.optim); an optimiser without a twin
trains downstream with its own update."""

from __future__ import annotations

import itertools

import pytest
import torch

from farzi_lightning.inner import (
    ForwardOptimizer,
    ReverseAdam,
    ReverseAdamW,
    ReverseSGD,
    State,
    UnrolledAdam,
    UnrolledAdamW,
    UnrolledSGD,
)
from farzi_lightning.inner.functional import adam_init, adam_update, sgd_init, sgd_update

ADAM_GRID = list(itertools.product([1e-3, 0.05], [(0.9, 0.999), (0.5, 0.9)], [1e-8, 1e-3], [0.0, 0.1],
                                   [torch.float32, torch.float64]))
SGD_GRID = list(itertools.product([1e-3, 0.1], [0.0, 0.5, 0.9], [torch.float32, torch.float64]))
STEPS = 5


def trajectory(dtype):
    """A start point and a fixed sequence of gradients (the update, not the loss, is under test)."""
    g = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(4, 3, generator=g, dtype=torch.float64).to(dtype),
             "b": torch.randn(3, generator=g, dtype=torch.float64).to(dtype)}
    grads = [{k: torch.randn(v.shape, generator=g, dtype=torch.float64).to(dtype) for k, v in theta.items()}
             for _ in range(STEPS)]
    return theta, grads


def run_torch(opt_factory, theta, grads):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in theta.items()}
    optimizer = opt_factory(list(params.values()))
    for step in grads:
        for k, p in params.items():
            p.grad = step[k].clone()
        optimizer.step()
    return {k: p.detach() for k, p in params.items()}


def run_reverse(opt, theta, grads):
    state = State({k: v.clone() for k, v in theta.items()}, opt.init_buffers(theta))
    for t, step in enumerate(grads, 1):
        state = opt.step(state, {k: v.clone() for k, v in step.items()}, t)
    return state.params


def close(a, b, dtype):
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol)


@pytest.mark.parametrize("lr, betas, eps, wd, dtype", ADAM_GRID)
def test_adam_and_adamw_agree_everywhere(lr, betas, eps, wd, dtype):
    theta, grads = trajectory(dtype)
    reverse = (ReverseAdamW(lr=lr, betas=betas, eps=eps, weight_decay=wd, steps=STEPS) if wd
               else ReverseAdam(lr=lr, betas=betas, eps=eps, steps=STEPS))
    unrolled = (UnrolledAdamW(lr=lr, betas=betas, eps=eps, weight_decay=wd, steps=STEPS) if wd
                else UnrolledAdam(lr=lr, betas=betas, eps=eps, steps=STEPS))
    functional, state = dict(theta), adam_init(theta)
    for t, step in enumerate(grads, 1):
        functional, state = adam_update(functional, step, state, t, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    twin = run_torch(reverse.torch_optimizer, theta, grads)
    assert type(reverse.torch_optimizer([torch.zeros(1, requires_grad=True)])) is (
        torch.optim.AdamW if wd else torch.optim.Adam)
    close(run_reverse(reverse, theta, grads), twin, dtype)
    close(functional, twin, dtype)
    close(run_torch(unrolled.torch_optimizer, theta, grads), twin, dtype)
    close(run_torch(lambda ps: ForwardOptimizer(ps, reverse), theta, grads), twin, dtype)


@pytest.mark.parametrize("lr, momentum, dtype", SGD_GRID)
def test_sgd_agrees_everywhere(lr, momentum, dtype):
    theta, grads = trajectory(dtype)
    reverse = ReverseSGD(lr=lr, momentum=momentum, steps=STEPS)
    functional, state = dict(theta), sgd_init(theta)
    for t, step in enumerate(grads, 1):
        functional, state = sgd_update(functional, step, state, t, lr=lr, momentum=momentum)
    twin = run_torch(reverse.torch_optimizer, theta, grads)
    assert type(reverse.torch_optimizer([torch.zeros(1, requires_grad=True)])) is torch.optim.SGD
    close(run_reverse(reverse, theta, grads), twin, dtype)
    close(functional, twin, dtype)
    close(run_torch(UnrolledSGD(lr=lr, momentum=momentum, steps=STEPS).torch_optimizer, theta, grads), twin, dtype)


class ReverseAdamNoTwin(ReverseAdam):
    """As a third-party optimiser without a torch.optim twin: the default ``torch_optimizer``."""

    torch_optimizer = ReverseAdam.__mro__[1].torch_optimizer  # ReversibleOptimizer's: ForwardOptimizer


def test_an_optimizer_without_a_twin_trains_downstream_with_its_own_update():
    opt = ReverseAdamNoTwin(lr=0.05, steps=STEPS)
    optimizer = opt.torch_optimizer([torch.zeros(1, requires_grad=True)])
    assert isinstance(optimizer, ForwardOptimizer)
    theta, grads = trajectory(torch.float64)
    close(run_torch(opt.torch_optimizer, theta, grads), run_reverse(opt, theta, grads), torch.float64)
    from farzi_lightning import Downstream

    recipe = Downstream().recipe(opt, 0)
    assert recipe["optimizer"] == "forwardoptimizer"
    made = Downstream.make_optimizer(dict(recipe, lr=0.01), [torch.zeros(1, requires_grad=True)], opt)
    assert isinstance(made, ForwardOptimizer) and made.param_groups[0]["lr"] == 0.01
