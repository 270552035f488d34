"""Learnt per-row weights (``row_weights: true`` on a learnable summary): row i's inner loss, warm-up and downstream
training count ``exp(log_weight[i])`` times; the weights are learnt by the exact meta-gradient."""

from __future__ import annotations

import pytest
import torch

from farzi_lightning import bilevel, load_summary
from farzi_lightning.context import Context
from farzi_lightning.export import save_summary, summary_payload
from farzi_lightning.inner import ReverseAdam, UnrolledAdam
from farzi_lightning.learners import SASRec
from farzi_lightning.outer import OuterStep
from farzi_lightning.starts import RandomStart, SummaryWarmStart
from farzi_lightning.summaries import Feed, LatentSummary, TokenSummary

V = 11


def weighted_summary(cls=TokenSummary, n: int = 5, seed: int = 0) -> TokenSummary:
    torch.manual_seed(seed)
    summary = cls(V, n, 6, padding_idx=0, inputs="fixed", row_weights=True).double()
    summary.initialize(torch.randint(1, V, (12, 6)), torch.Generator().manual_seed(seed))
    with torch.no_grad():
        summary.log_weight.copy_(torch.randn(n, dtype=torch.float64))
    return summary


def learner() -> SASRec:
    torch.manual_seed(3)
    return SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=5, dropout=0.0).double().eval()


def test_the_inner_loss_weights_each_rows_mean_cross_entropy_by_hand():
    summary, model = weighted_summary(), learner()
    schedule = torch.tensor([[3, 0, 4]])
    params = {k: v.detach() for k, v in model.named_parameters()}
    got = bilevel.inner_loss(model, summary, schedule, Feed("hard"))(params, tuple(summary.parameters()), 0)
    probs = summary().detach()
    total = 0.0
    for row in schedule[0].tolist():  # by hand: one row at a time, a loop over positions
        inputs = torch.nn.functional.one_hot(summary.input_tokens[row, :-1], V).double()[None]
        with torch.no_grad():
            logq = torch.log_softmax(model(inputs)[0], -1)
        row_loss = sum(float(-(probs[row, t + 1] * logq[t]).sum()) for t in range(5)) / 5
        total += float(summary.log_weight[row].detach().exp()) * row_loss
    assert float(got.detach()) == pytest.approx(total / 3, rel=1e-12)


def test_weights_of_one_leave_every_meta_gradient_as_without_them():
    plain = TokenSummary(V, 5, 6, padding_idx=0, inputs="fixed").double()
    weighted = TokenSummary(V, 5, 6, padding_idx=0, inputs="fixed", row_weights=True).double()
    plain.initialize(torch.randint(1, V, (12, 6)), torch.Generator().manual_seed(0))
    weighted.load_state_dict({**plain.state_dict(), "log_weight": torch.zeros(5, dtype=torch.float64)})
    model, schedule = learner(), bilevel.inner_schedule(5, 2, 4, torch.Generator().manual_seed(1))
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    outer = bilevel.outer_loss(model, torch.randint(1, V, (3, 5)), torch.randint(1, V, (3, 5)))
    reverse = ReverseAdam(lr=0.05, steps=4)
    grads = [reverse.meta_gradient(bilevel.inner_loss(model, s, schedule, Feed("hard")), outer, params,
                                   tuple(s.parameters())).grads for s in (plain, weighted)]
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=0, atol=1e-14)
    assert len(grads[1]) == 2 and float(grads[1][1].abs().max()) > 0  # the weights get a meta-gradient of their own


@pytest.mark.parametrize("cls", [TokenSummary, LatentSummary])
def test_weight_meta_gradient_equals_finite_differences_of_plain_training(cls):
    """Reverse mode (row-sparse) and unrolled autograd against central differences of T plain ``torch.optim.Adam``
    steps taken by ``train_steps`` (the downstream and warm-up path) with the weights nudged, float64."""
    summary, model = weighted_summary(cls), learner()
    steps, schedule = 5, bilevel.inner_schedule(5, 2, 5, torch.Generator().manual_seed(4))
    theta0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    x, y = torch.randint(1, V, (4, 5)), torch.randint(1, V, (4, 5))
    outer = bilevel.outer_loss(model, x, y)
    inner = bilevel.inner_loss(model, summary, schedule, Feed("hard"))
    named = [n for n, _ in summary.named_parameters()]
    assert inner.row_hyper == tuple(i for i, n in enumerate(named) if n in ("z", "log_weight"))
    position = named.index("log_weight")
    reverse = ReverseAdam(lr=0.05, steps=steps).meta_gradient(inner, outer, theta0, tuple(summary.parameters()))
    unrolled = UnrolledAdam(lr=0.05, steps=steps).meta_gradient(inner, outer, theta0, tuple(summary.parameters()))
    got = reverse.grads[position]

    def trained_loss(log_weight: torch.Tensor) -> float:
        fresh = learner()
        fresh.load_state_dict(theta0, strict=False)
        with torch.no_grad():
            rows = summary().detach()
        bilevel.train_steps(fresh, rows, Feed("hard"), torch.optim.Adam(fresh.parameters(), lr=0.05), schedule,
                            ids=summary.input_ids(), weights=log_weight.exp())
        with torch.no_grad():
            return float(outer(dict(fresh.named_parameters())))

    eps, base = 1e-6, summary.log_weight.detach().clone()
    numeric = torch.zeros_like(base)
    for i in range(len(base)):
        bump = torch.zeros_like(base)
        bump[i] = eps
        numeric[i] = (trained_loss(base + bump) - trained_loss(base - bump)) / (2 * eps)
    torch.testing.assert_close(got, numeric, rtol=1e-5, atol=1e-8)
    for a, b in zip(reverse.grads, unrolled.grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_weights_reach_warm_ups_stacked_draws_and_summary_files(tmp_path):
    summary = weighted_summary()
    ctx = Context(learner(), summary, Feed("hard"), ReverseAdam(lr=0.05, steps=3), inner_batch_size=2)
    warm = SummaryWarmStart(RandomStart(), max_steps=6)
    nudged = {}
    for scale in (0.0, 3.0):  # the warm-up trains on the weights: other weights, another θ0
        with torch.no_grad():
            summary.log_weight.fill_(scale)
        nudged[scale] = warm.sample(ctx, torch.Generator().manual_seed(7))
    assert any(not torch.allclose(nudged[0.0][k], nudged[3.0][k]) for k in nudged[0.0])

    def step(batch_draws):  # m = 3 draws stacked or one after another: the same weight meta-gradient
        outer = OuterStep(ctx, warm, meta_batch_size=3, batch_draws=batch_draws)
        rows = torch.randint(1, V, (3, 6), generator=torch.Generator().manual_seed(9))
        return outer(lambda d: torch.Generator().manual_seed(80 + d), lambda g: (rows[:, :-1], rows[:, 1:]))

    with torch.no_grad():
        summary.log_weight.copy_(torch.linspace(-1, 1, 5, dtype=torch.float64))
    sequential, stacked = step(False), step(True)
    assert len(stacked.grads) == 2
    for a, b in zip(stacked.grads, sequential.grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    for kw in ({}, {"rank": 3}, {"rank": 3, "bits": 8}):  # dense and compact files keep the weights exactly
        save_summary(tmp_path / "s.pt", summary_payload(summary, [str(i) for i in range(V)], Feed("hard"), **kw))
        loaded = load_summary(tmp_path / "s.pt")
        assert loaded.weights() is not None  # stored in the file's float32, exactly
        torch.testing.assert_close(loaded.log_weight.detach(), summary.log_weight.detach().float(), rtol=0, atol=0)


def test_an_outer_step_logs_the_range_of_the_row_weights():
    from farzi_lightning.outer import StepResult, step_metrics

    summary = weighted_summary()
    result = StepResult([], torch.zeros(4, dtype=torch.float64), torch.tensor(1.0), True)
    logged = step_metrics(result, summary, 1.0, 0.01, 0)
    assert logged["summary/row_weight_min"] == pytest.approx(float(summary.log_weight.detach().min().exp()))
    assert logged["summary/row_weight_max"] == pytest.approx(float(summary.log_weight.detach().max().exp()))
    plain = step_metrics(result, TokenSummary(V, 5, 6), 1.0, 0.01, 0)
    assert not any(k.startswith("summary/row_weight") for k in plain)
