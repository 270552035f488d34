"""Start points (plug-in θ0), how a summary feeds a learner, and summary initialisation from any baseline."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from farzi_lightning import bilevel
from farzi_lightning.context import Context
from farzi_lightning.inner import ReverseAdam, UnrolledAdam
from farzi_lightning.learners import SASRec
from farzi_lightning.outer import OuterStep
from farzi_lightning.starts import RandomStart, StartPoint, SummaryWarmStart
from farzi_lightning.summaries import Feed, LatentSummary, TokenSummary, make_baseline

V = 12


def fake_module(summary_cls=TokenSummary, feed: Feed | None = None) -> Context:
    """What start points read: a ``Context`` built by hand (no module, no Trainer)."""
    learner = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=5).requires_grad_(False).eval()
    summary = summary_cls(V, 4, 6, padding_idx=0)
    summary.initialize(torch.randint(1, V, (10, 6)), torch.Generator().manual_seed(0))
    return Context(learner, summary, feed or Feed(), ReverseAdam(lr=0.01, steps=3), inner_batch_size=2)


def test_random_start_is_a_function_of_the_generator_only():
    module = fake_module()
    a = RandomStart().sample(module, torch.Generator().manual_seed(5))
    torch.manual_seed(99)  # global state must not matter
    b = RandomStart().sample(module, torch.Generator().manual_seed(5))
    c = RandomStart().sample(module, torch.Generator().manual_seed(6))
    assert a.keys() == dict(module.learner.state_dict()).keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_warm_start_with_k_zero_equals_the_start_it_wraps():
    module = fake_module()
    plain = RandomStart().sample(module, torch.Generator().manual_seed(1))
    warm = SummaryWarmStart(RandomStart(), max_steps=0).sample(module, torch.Generator().manual_seed(1))
    assert all(torch.equal(plain[k], warm[k]) for k in plain)


def test_warm_start_trains_k_steps_on_the_summary_like_the_inner_loop():
    module = fake_module(feed=Feed("hard"))
    warm = SummaryWarmStart(RandomStart(), max_steps=7).sample(module, torch.Generator().manual_seed(2))
    # The same draws by hand: θ0 from RandomStart, k ~ U[0, 7], the schedule, then k Adam steps.
    generator = torch.Generator().manual_seed(2)
    theta = RandomStart().sample(module, generator)
    k = int(torch.randint(8, (1,), generator=generator))
    assert k > 0
    schedule = bilevel.inner_schedule(4, 2, k, generator)
    learner = module.learner_copy()
    learner.load_state_dict(theta)
    learner.eval()
    optimizer = torch.optim.Adam(learner.parameters(), lr=0.01)
    rows = module.summary().detach()
    for batch in schedule:
        optimizer.zero_grad()
        inputs = F.one_hot(rows[batch][:, :-1].argmax(-1), V).float()
        bilevel.next_token_loss(learner(inputs), rows[batch][:, 1:]).backward()
        optimizer.step()
    for name, value in learner.state_dict().items():
        torch.testing.assert_close(warm[name], value, rtol=0, atol=0)
    assert any(not torch.equal(warm[k_], theta[k_]) for k_ in theta)


def test_start_point_is_an_extension_point():
    class Zeros(StartPoint):
        def sample(self, context, generator):
            return {k: torch.zeros_like(v) for k, v in context.learner.state_dict().items()}

    module = fake_module()
    theta = SummaryWarmStart(Zeros(), max_steps=3).sample(module, torch.Generator().manual_seed(0))
    assert theta.keys() == dict(module.learner.state_dict()).keys()
    with pytest.raises(TypeError):
        StartPoint()  # abstract: sample must be implemented
    with pytest.raises(ValueError, match="max_steps"):
        SummaryWarmStart(RandomStart(), max_steps=-1)


def test_feed_modes():
    logits = torch.randn(3, 5, V, requires_grad=True)
    probs = torch.softmax(logits, -1)
    soft_in, soft_out = Feed("soft")(probs)
    torch.testing.assert_close(soft_in, probs[:, :-1])
    torch.testing.assert_close(soft_out, probs[:, 1:])
    hard_in, hard_out = Feed("hard")(probs)
    assert torch.equal(hard_in, F.one_hot(probs[:, :-1].argmax(-1), V).float()) and not hard_in.requires_grad
    torch.testing.assert_close(hard_out, probs[:, 1:])
    st_in, _ = Feed("straight_through")(probs)
    torch.testing.assert_close(st_in.detach(), hard_in)  # forward: hard (up to hard + p - p rounding)
    weights = torch.randn(3, 4, V)
    (g_st,) = torch.autograd.grad((st_in * weights).sum(), logits, retain_graph=True)
    (g_soft,) = torch.autograd.grad((soft_in * weights).sum(), logits)
    torch.testing.assert_close(g_st, g_soft)  # backward: soft
    sharp_in, sharp_out = Feed("soft", input_temperature=0.5, target_temperature=2.0)(probs)
    torch.testing.assert_close(sharp_in, torch.softmax(2 * torch.log(probs[:, :-1]), -1))
    torch.testing.assert_close(sharp_out, torch.softmax(0.5 * torch.log(probs[:, 1:]), -1))
    for kwargs, match in (({"input_mode": "gumbel"}, "input_mode"), ({"target_temperature": 0}, "target_temp")):
        with pytest.raises(ValueError, match=match):
            Feed(**kwargs)


def test_inner_loss_uses_the_feed():
    module = fake_module()
    schedule = bilevel.inner_schedule(4, 2, 3, torch.Generator().manual_seed(0))
    params = {k: v.clone() for k, v in module.learner.state_dict().items()}
    hyper = tuple(p.detach().requires_grad_(True) for p in module.summary.parameters())
    soft = bilevel.inner_loss(module.learner, module.summary, schedule, Feed("soft"))(params, hyper, 0)
    hard = bilevel.inner_loss(module.learner, module.summary, schedule, Feed("hard"))(params, hyper, 0)
    probs = module.summary(schedule[0])
    inputs = F.one_hot(probs[:, :-1].argmax(-1), V).float()
    expected = bilevel.next_token_loss(module.learner(inputs), probs[:, 1:])
    torch.testing.assert_close(hard, expected)
    assert not torch.isclose(soft, hard)


@pytest.mark.parametrize("init", ["random", "head"])
@pytest.mark.parametrize("cls", [LatentSummary, TokenSummary])
def test_summary_starts_from_the_named_baseline(cls, init):
    real = torch.randint(1, V, (15, 8))
    summary = cls(V, 4, 6, init=init, padding_idx=0)
    summary.initialize(real, torch.Generator().manual_seed(4))
    baseline = make_baseline(init, V, 4, 6, 0, real, torch.Generator().manual_seed(4))
    assert torch.equal(summary.decode(), baseline.tokens)


def test_token_summary_from_teacher_reproduces_the_teacher_baseline():
    """A tied summary (one distribution per position) starts from the lifted form, whose argmax is the real row;
    a summary with fixed inputs from the teacher's own distributions (tests/test_evaluation.py)."""
    torch.manual_seed(0)
    real = torch.randint(1, V, (15, 8))
    teacher = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=8)
    summary = TokenSummary(V, 4, 6, init="teacher", padding_idx=0)
    summary.initialize(real, torch.Generator().manual_seed(4), teacher)
    baseline = make_baseline("teacher", V, 4, 6, 0, real, torch.Generator().manual_seed(4), teacher,
                             targets="lifted")
    torch.testing.assert_close(summary()[:, 1:], baseline()[:, 1:], rtol=0, atol=1e-5)
    assert torch.equal(summary.decode(), baseline.tokens)


@pytest.mark.parametrize("n, V_big", [(4, 12), (60, 400)])  # full SVD, and the randomized one on a wide matrix
def test_latent_summary_fits_low_rank_distributions_exactly(n, V_big):
    torch.manual_seed(0)
    logits = 0.5 * torch.randn(n * 6, 3) @ torch.randn(3, V_big)  # rank 3 (4 after centring), above the floor
    probs = torch.softmax(logits, -1).view(n, 6, V_big)
    summary = LatentSummary(V_big, n, 6, latent_dim=5)
    summary.load_rows(probs.argmax(-1), probs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(summary(), probs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("summary_cls", [TokenSummary, LatentSummary])
@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_row_sparse_meta_gradient_equals_the_dense_one_and_float64_unrolled(summary_cls, mode):
    """Each inner step reads a batch of summary rows: reverse mode differentiates just those rows and adds them in
    (``inner_loss.on_rows``); the meta-gradient equals the dense path's and unrolled autograd's in float64."""
    from farzi_lightning.inner import UnrolledAdam

    torch.manual_seed(0)
    learner = SASRec(13, d_model=8, n_layers=1, n_heads=1, max_len=5, dropout=0.0).double().eval()
    summary = summary_cls(13, num_sequences=6, seq_len=6).double()
    params = {k: v.detach().clone() for k, v in learner.named_parameters()}
    hyper = tuple(summary.parameters())
    schedule = bilevel.inner_schedule(6, 2, 7, torch.Generator().manual_seed(1))  # 2 of 6 rows a step
    x = torch.randint(1, 13, (4, 5))
    outer = bilevel.outer_loss(learner, x, torch.randint(1, 13, (4, 5)))
    sparse = bilevel.inner_loss(learner, summary, schedule, Feed(mode))
    assert sparse.row_hyper == (0,) and torch.equal(sparse.rows(3), schedule[3])

    def dense(p, h, step):  # the same loss without the row-sparse attributes
        return sparse(p, h, step)

    calls, on_rows = [], sparse.on_rows

    def counted(p, h, step):
        calls.append(tuple(h[0].shape))
        return on_rows(p, h, step)

    sparse.on_rows = counted

    kw = {"lr": 0.01, "steps": 7}
    got = ReverseAdam(**kw).meta_gradient(sparse, outer, params, hyper).grads
    full = ReverseAdam(**kw).meta_gradient(dense, outer, params, hyper).grads
    ref = UnrolledAdam(**kw).meta_gradient(sparse, outer, params, hyper).grads
    for g, f, r in zip(got, full, ref):
        assert torch.allclose(g, f, rtol=0, atol=1e-12) and torch.allclose(g, r, rtol=1e-9, atol=1e-12)
    assert len(calls) >= 7 and all(shape[0] == 2 for shape in calls)  # every reversed step: its 2 rows only
    unread = sorted(set(range(6)) - set(schedule.flatten().tolist()))
    assert all(float(got[0][i].abs().max()) == 0.0 for i in unread)  # rows never read get no meta-gradient


def test_the_outer_step_runs_without_a_trainer_exactly():
    """``OuterStep`` over a hand-built ``Context``: reverse mode equals the float64 unrolled reference, and two
    draws on one process equal one draw on each of two (the DDP mean)."""
    def step(inner, draws=1, rank=0):
        torch.manual_seed(0)
        learner = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=5).double().requires_grad_(False)
        summary = LatentSummary(V, 4, 6, latent_dim=3, padding_idx=0).double()
        summary.initialize(torch.randint(1, V, (10, 6)), torch.Generator().manual_seed(0))
        context = Context(learner, summary, Feed("soft"), inner, inner_batch_size=2)
        outer = OuterStep(context, SummaryWarmStart(RandomStart(), max_steps=2), meta_batch_size=draws)

        def real(generator):
            rows = torch.randint(1, V, (3, 6), generator=generator)
            return rows[:, :-1], rows[:, 1:]

        return outer(lambda draw: torch.Generator().manual_seed(100 + draw), real, rank)

    reverse = step(ReverseAdam(lr=0.05, steps=4))
    unrolled = step(UnrolledAdam(lr=0.05, steps=4))
    assert reverse.finite and reverse.grad_norm > 0
    for a, b in zip(reverse.grads, unrolled.grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    both = step(ReverseAdam(lr=0.05, steps=4), draws=2)
    second = step(ReverseAdam(lr=0.05, steps=4), rank=1)
    for m, a, b in zip(both.grads, reverse.grads, second.grads):
        torch.testing.assert_close(m, (a + b) / 2, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(both.stats, (reverse.stats + second.stats) / 2)


@pytest.mark.parametrize("layout", [{"checkpoints": 0}, {"checkpoints": 1, "drift_tolerance": 1e-300}],
                         ids=["one_long_segment", "every_segment_rejected"])
def test_row_sparse_contributions_of_a_segment_count_once_accepted(layout):
    """A reversed segment's row contributions wait until its drift check passes: a segment reading more rows than
    the summary holds gathers them densely (one long segment), and a rejected segment's contributions are
    dropped before its replay (a tolerance no reversal meets: every segment replays, down to single steps);
    either way the meta-gradient is unrolled autograd's, in float64."""
    from farzi_lightning.inner import UnrolledAdam

    torch.manual_seed(0)
    learner = SASRec(13, d_model=8, n_layers=1, n_heads=1, max_len=5, dropout=0.0).double().eval()
    summary = TokenSummary(13, num_sequences=4, seq_len=6).double()
    params = {k: v.detach().clone() for k, v in learner.named_parameters()}
    schedule = bilevel.inner_schedule(4, 2, 9, torch.Generator().manual_seed(1))  # 18 row reads of 4 rows
    outer = bilevel.outer_loss(learner, torch.randint(1, 13, (4, 5)), torch.randint(1, 13, (4, 5)))
    inner = bilevel.inner_loss(learner, summary, schedule, Feed("soft"))
    # eps=1e-3 keeps Adam's undo well conditioned (1/(√v+ε) bounded), so an accepted reversal is exact to
    # rounding and the comparison tests the bookkeeping, not the drift tolerance.
    got = ReverseAdam(lr=0.01, steps=9, eps=1e-3, **layout).meta_gradient(inner, outer, params,
                                                                          tuple(summary.parameters()))
    ref = UnrolledAdam(lr=0.01, steps=9, eps=1e-3).meta_gradient(inner, outer, params, tuple(summary.parameters()))
    assert (got.replayed_steps > 0) == ("drift_tolerance" in layout)
    torch.testing.assert_close(got.grads[0], ref.grads[0], rtol=1e-7, atol=1e-10)
