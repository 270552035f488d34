"""Bad input to the inner optimisers fails early with an error naming the argument."""

from __future__ import annotations

import pytest
import torch

from farzi_lightning.inner import ReverseAdam, ReverseSGD, UnrolledAdam, UnrolledSGD

from problems import mlp_problem

OPTIMISERS = [ReverseAdam, ReverseSGD, UnrolledAdam, UnrolledSGD]


@pytest.mark.parametrize("cls", OPTIMISERS)
@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_steps_must_be_a_positive_integer(cls, steps):
    with pytest.raises(ValueError, match="steps"):
        cls(steps=steps)


@pytest.mark.parametrize("cls", OPTIMISERS)
def test_lr_must_be_positive(cls):
    with pytest.raises(ValueError, match="lr"):
        cls(lr=0.0, steps=3)


@pytest.mark.parametrize("kwargs, match", [
    ({"betas": (1.0, 0.999)}, "betas"), ({"eps": 0.0}, "eps"), ({"checkpoint_every": 0}, "checkpoint_every"),
    ({"checkpoints": -1}, "checkpoints"), ({"on_drift": "ignore"}, "on_drift"),
    ({"drift_tolerance": 0}, "drift_tolerance"),
])
def test_reverse_adam_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReverseAdam(steps=3, **kwargs)


def test_sgd_momentum_range():
    with pytest.raises(ValueError, match="momentum"):
        ReverseSGD(momentum=1.0, steps=3)


@pytest.mark.parametrize("cls", OPTIMISERS)
def test_hyper_that_does_not_require_grad(cls):
    inner, outer, params, (x, y) = mlp_problem()
    with pytest.raises(ValueError, match=r"hyper\[1\].*does not require grad"):
        cls(steps=2).meta_gradient(inner, outer, params, (x, y.detach()))


@pytest.mark.parametrize("cls", OPTIMISERS)
def test_inner_loss_that_ignores_a_hyper(cls):
    inner, outer, params, hyper = mlp_problem()
    unused = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"inner_loss does not depend on hyper\[2\]"):
        cls(steps=2).meta_gradient(inner, outer, params, (*hyper, unused))


@pytest.mark.parametrize("cls", OPTIMISERS)
def test_non_scalar_losses(cls):
    inner, outer, params, hyper = mlp_problem()
    with pytest.raises(ValueError, match=r"inner_loss must return a scalar, got a tensor of shape \(6, 3\)"):
        cls(steps=2).meta_gradient(lambda p, h, s: (h[0][0] @ p["w1"] @ p["w2"]) - h[1][0], outer, params, hyper)
    with pytest.raises(ValueError, match="outer_loss must return a scalar"):
        cls(steps=2).meta_gradient(inner, lambda p: p["w1"], params, hyper)


@pytest.mark.parametrize("cls", OPTIMISERS)
def test_mismatched_shapes_in_params(cls):
    inner, outer, params, hyper = mlp_problem()
    params["w1"] = params["w1"][:, :4]  # the learner expects (5, 8)
    with pytest.raises(ValueError, match=r"inner_loss failed on params with shapes .*w1: \(5, 4\)"):
        cls(steps=2).meta_gradient(inner, outer, params, hyper)


@pytest.mark.parametrize("bad, err, match", [
    ({}, TypeError, "params must be a non-empty dict"),
    ({"w": [1.0]}, TypeError, r"params\['w'\] must be a Tensor"),
    ({"w": torch.ones(2, dtype=torch.long)}, TypeError, r"params\['w'\] must be floating point"),
])
def test_bad_params(bad, err, match):
    inner, outer, _, hyper = mlp_problem()
    with pytest.raises(err, match=match):
        ReverseAdam(steps=2).meta_gradient(inner, outer, bad, hyper)


def test_bad_hyper_and_closures():
    inner, outer, params, hyper = mlp_problem()
    with pytest.raises(TypeError, match="hyper must be a non-empty tuple"):
        ReverseAdam(steps=2).meta_gradient(inner, outer, params, hyper[0])
    with pytest.raises(TypeError, match="inner_loss must be callable"):
        ReverseAdam(steps=2).meta_gradient(None, outer, params, hyper)


def test_inference_mode_is_refused_clearly():
    inner, outer, params, hyper = mlp_problem()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        ReverseAdam(steps=2).meta_gradient(inner, outer, params, hyper)


def test_sqrt_of_zero_second_moment_gives_no_nan():
    """A parameter the inner loss never touches has v = 0 throughout: no NaN in either implementation."""
    inner, outer, params, hyper = mlp_problem()
    params = {**params, "dead": torch.zeros(4, dtype=torch.float64)}
    for cls in (ReverseAdam, UnrolledAdam):
        result = cls(steps=5, eps=1e-8).meta_gradient(inner, lambda p: outer(p) + p["dead"].sum(), params, hyper)
        assert all(torch.isfinite(g).all() for g in result.grads)
