"""Reverse-mode meta-gradients equal the unrolled-autograd references and finite differences (float64)."""

from __future__ import annotations

import pytest
import torch

from farzi_lightning.inner import ReverseAdam, ReverseAdamW, ReverseSGD, UnrolledAdam, UnrolledAdamW, UnrolledSGD

from problems import mlp_problem, rel_error, transformer_problem

PROBLEMS = {"mlp": mlp_problem, "transformer": transformer_problem}


def pair(kind: str, steps: int, eps: float, **reversal):
    if kind == "adam":
        return (ReverseAdam(lr=0.02, eps=eps, steps=steps, **reversal), UnrolledAdam(lr=0.02, eps=eps, steps=steps))
    if kind == "adamw":
        return (ReverseAdamW(lr=0.02, eps=eps, weight_decay=0.5, steps=steps, **reversal),
                UnrolledAdamW(lr=0.02, eps=eps, weight_decay=0.5, steps=steps))
    momentum = {"sgd": 0.9, "sgd0": 0.0}[kind]
    return (ReverseSGD(lr=0.1, momentum=momentum, steps=steps, **reversal),
            UnrolledSGD(lr=0.1, momentum=momentum, steps=steps))


@pytest.mark.parametrize("problem", ["mlp", "transformer"])
@pytest.mark.parametrize("steps", [1, 3, 20])
@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd", "sgd0"])
def test_matches_unrolled_float64(problem, steps, kind):
    reverse, unrolled = pair(kind, steps, eps=1e-3)
    got = reverse.meta_gradient(*PROBLEMS[problem]())
    want = unrolled.meta_gradient(*PROBLEMS[problem]())
    assert rel_error(got.grads, want.grads) <= 1e-9
    assert rel_error(got.params.values(), want.params.values()) <= 1e-12
    assert torch.allclose(got.outer_loss, want.outer_loss, rtol=1e-12)
    assert got.drift <= 1e-10


@pytest.mark.parametrize("problem", ["mlp", "transformer"])
@pytest.mark.parametrize("steps", [3, 20])
def test_adam_small_eps_float64(problem, steps):
    # With eps=1e-8 Adam's step is nearly sign(g): any two float64 computations differ ~1e-7 by cancellation.
    reverse, unrolled = pair("adam", steps, eps=1e-8)
    assert rel_error(reverse.meta_gradient(*PROBLEMS[problem]()).grads,
                     unrolled.meta_gradient(*PROBLEMS[problem]()).grads) <= 1e-5


@pytest.mark.parametrize("reversal", [
    {"checkpoints": 0}, {"checkpoints": 7}, {"checkpoint_every": 1}, {"checkpoint_every": 6},
    # A tolerance nothing meets forces the recursive replay everywhere: still exact.
    {"checkpoints": 0, "drift_tolerance": 1e-300},
])
@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_checkpoint_layouts_agree(kind, reversal):
    reverse, unrolled = pair(kind, 20, eps=1e-3, **reversal)
    got = reverse.meta_gradient(*transformer_problem())
    assert rel_error(got.grads, unrolled.meta_gradient(*transformer_problem()).grads) <= 1e-9
    if reversal.get("drift_tolerance"):
        assert got.replayed_steps > 0


def two_parameter_problem():
    """θ ∈ R², hyper h ∈ R²: inner pulls θ toward a nonlinear target of h, outer is a fixed quadratic."""
    params = {"theta": torch.tensor([0.3, -0.2], dtype=torch.float64)}
    h = torch.tensor([0.7, -1.1], dtype=torch.float64, requires_grad=True)

    def inner_loss(p, hyper, step):
        (hh,) = hyper
        target = torch.stack([torch.sin(hh[0] * (1 + step % 2)), hh[0] * hh[1]])
        return ((p["theta"] - target) ** 2).sum() + 0.1 * (p["theta"] ** 4).sum()

    def outer_loss(p):
        return ((p["theta"] - torch.tensor([1.0, 0.5], dtype=torch.float64)) ** 2).sum()

    return inner_loss, outer_loss, params, (h,)


@pytest.mark.parametrize("opt", [ReverseAdam(lr=0.05, eps=1e-3, steps=20), ReverseSGD(lr=0.05, momentum=0.9, steps=20),
                                 ReverseSGD(lr=0.05, momentum=0.0, steps=20)], ids=["adam", "sgd", "sgd0"])
def test_matches_central_finite_differences(opt):
    inner_loss, outer_loss, params, (h,) = two_parameter_problem()
    got = opt.meta_gradient(inner_loss, outer_loss, params, (h,)).grads[0]
    step = 1e-6
    fd = torch.zeros(2, dtype=torch.float64)
    for i in range(2):
        plus, minus = h.detach().clone(), h.detach().clone()
        plus[i] += step
        minus[i] -= step
        f = [opt.meta_gradient(inner_loss, outer_loss, params, (x.requires_grad_(True),)).outer_loss
             for x in (plus, minus)]
        fd[i] = (f[0] - f[1]) / (2 * step)
    assert torch.allclose(got, fd, rtol=1e-7, atol=1e-10)
    assert fd.abs().min() > 1e-3  # the problem is not degenerate


def test_params_not_modified_and_results_detached():
    inner_loss, outer_loss, params, hyper = transformer_problem()
    before = {k: v.clone() for k, v in params.items()}
    result = ReverseAdam(lr=0.01, steps=5).meta_gradient(inner_loss, outer_loss, params, hyper)
    assert all(torch.equal(before[k], params[k]) for k in params)
    assert not any(v.requires_grad for v in result.params.values())
    assert not result.outer_loss.requires_grad and all(not g.requires_grad for g in result.grads)
    assert [g.shape for g in result.grads] == [h.shape for h in hyper]
    assert 0 < float(result.inner_loss) < 10


# ---- the inner learning rate's meta-gradient ----

@pytest.mark.parametrize("problem", ["mlp", "transformer"])
@pytest.mark.parametrize("steps", [1, 20])
@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd", "sgd0"])
def test_lr_meta_gradient_matches_unrolled_float64(problem, steps, kind):
    reverse, unrolled = pair(kind, steps, eps=1e-3)
    got = reverse.meta_gradient(*PROBLEMS[problem]()).lr_grad
    want = unrolled.meta_gradient(*PROBLEMS[problem]()).lr_grad
    assert got is not None and got.dtype == torch.float64
    assert abs(float(got) - float(want)) <= 1e-9 * max(abs(float(want)), 1e-12)


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_fused_kernels_match_unrolled_float64(kind):
    """``fused=True`` (compiled update, undo and adjoint maps): the same meta-gradient, θ_T and lr gradient as the
    unrolled reference, through checkpointed segments and a forced single-step reversal."""
    for problem, reversal in ((mlp_problem, {}), (transformer_problem, {"checkpoint_every": 1})):
        reverse, unrolled = pair(kind, 20, eps=1e-3, fused=True, **reversal)
        assert reverse.fused
        got, want = reverse.meta_gradient(*problem()), unrolled.meta_gradient(*problem())
        assert rel_error(got.grads, want.grads) <= 1e-9
        assert rel_error(got.params.values(), want.params.values()) <= 1e-12
        assert abs(float(got.lr_grad) - float(want.lr_grad)) <= 1e-9 * abs(float(want.lr_grad))
        assert got.drift <= 1e-10


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_without_lr_grad_the_meta_gradient_is_the_same_and_lr_grad_is_none(kind):
    for opt in pair(kind, 5, eps=1e-3):
        full = opt.meta_gradient(*transformer_problem())
        lean = opt.meta_gradient(*transformer_problem(), lr_grad=False)
        assert lean.lr_grad is None and full.lr_grad is not None
        for a, b in zip(lean.grads, full.grads):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("reversal", [{"checkpoints": 0}, {"checkpoint_every": 1},
                                      {"checkpoints": 0, "drift_tolerance": 1e-300}])
def test_lr_meta_gradient_survives_every_checkpoint_layout(reversal):
    reverse, unrolled = pair("adam", 20, eps=1e-3, **reversal)
    got = reverse.meta_gradient(*transformer_problem()).lr_grad
    want = unrolled.meta_gradient(*transformer_problem()).lr_grad
    assert abs(float(got) - float(want)) <= 1e-9 * abs(float(want))


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd", "sgd0"])
def test_lr_meta_gradient_matches_central_finite_differences(kind):
    inner_loss, outer_loss, params, hyper = two_parameter_problem()
    make = {"adam": lambda lr: ReverseAdam(lr=lr, eps=1e-3, steps=20),
            "adamw": lambda lr: ReverseAdamW(lr=lr, eps=1e-3, weight_decay=0.5, steps=20),
            "sgd": lambda lr: ReverseSGD(lr=lr, momentum=0.9, steps=20),
            "sgd0": lambda lr: ReverseSGD(lr=lr, momentum=0.0, steps=20)}[kind]
    got = make(0.05).meta_gradient(inner_loss, outer_loss, params, hyper).lr_grad
    step = 1e-7
    f = [make(0.05 + s).meta_gradient(inner_loss, outer_loss, params, hyper).outer_loss for s in (step, -step)]
    fd = (f[0] - f[1]) / (2 * step)
    assert abs(float(got) - float(fd)) <= 1e-6 * abs(float(fd)) + 1e-10
    assert abs(float(fd)) > 1e-3


def test_fused_falls_back_to_eager_maps_with_one_warning_where_compilation_fails(monkeypatch):
    from farzi_lightning.inner import fused_adam

    kernels = fused_adam._Kernels()

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    kernels.compiled = {name: broken for name in kernels.compiled}
    monkeypatch.setattr(fused_adam, "_KERNELS", kernels)
    reverse, unrolled = pair("adam", 5, eps=1e-3, fused=True)
    with pytest.warns(RuntimeWarning, match="torch.compile is unavailable") as caught:
        got = reverse.meta_gradient(*mlp_problem())
    assert len([w for w in caught if "torch.compile" in str(w.message)]) == 1 and kernels.failed
    assert rel_error(got.grads, unrolled.meta_gradient(*mlp_problem()).grads) <= 1e-9
