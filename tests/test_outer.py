"""Outer losses, the real batch of an outer step, common random numbers across draws, relative clipping."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from farzi_lightning.context import Context
from farzi_lightning.inner import ReverseAdam, UnrolledAdam
from farzi_lightning.learners import SASRec
from farzi_lightning.outer import OuterStep, RelativeClip, clip_limit, real_batch
from farzi_lightning.outer_losses import FeatureMatch, NextToken, TeacherKL, Weighted
from farzi_lightning.starts import RandomStart
from farzi_lightning.summaries import Feed, LatentSummary

V = 12


def context(inner, teacher=None) -> Context:
    torch.manual_seed(0)
    learner = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=5).double().requires_grad_(False).eval()
    summary = LatentSummary(V, 4, 6, latent_dim=3, padding_idx=0).double()
    summary.initialize(torch.randint(1, V, (10, 6)), torch.Generator().manual_seed(0))
    return Context(learner, summary, Feed("soft"), inner, inner_batch_size=2, teacher=lambda: teacher)


def teacher_model() -> SASRec:
    torch.manual_seed(1)
    return SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=5).double().eval()


def batch():
    x = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    y = torch.tensor([[-100, -100, 4, 5, 6], [2, 3, 4, 5, 7]])
    return x, y


def test_teacher_kl_is_the_kl_from_the_teachers_predictions_by_hand():
    ctx, teacher = context(ReverseAdam(lr=0.05, steps=2)), teacher_model()
    x, y = batch()
    params = dict(ctx.learner.named_parameters())
    value = float(TeacherKL(temperature=2.0).build(Context(ctx.learner, ctx.summary, teacher=lambda: teacher),
                                                   x, y)(params))
    with torch.no_grad():
        t, s = teacher(x) / 2.0, ctx.learner(x)
    total, count = 0.0, 0
    for b in range(2):
        for i in range(5):
            if int(y[b, i]) == -100:
                continue
            tl = t[b, i].clone()
            tl[0] = float("-inf")  # the padding item carries no mass
            p = torch.softmax(tl, -1)
            q = torch.log_softmax(s[b, i], -1)
            total += float(sum(p[v] * (torch.log(p[v]) - q[v]) for v in range(1, V)))
            count += 1
    assert value == pytest.approx(total / count, rel=1e-10)
    both = Weighted([NextToken(), TeacherKL(temperature=2.0)], [1.0, 0.5]).build(
        Context(ctx.learner, ctx.summary, teacher=lambda: teacher), x, y)(params)
    next_token = NextToken().build(ctx, x, y)(params)
    assert float(both) == pytest.approx(float(next_token) + 0.5 * value, rel=1e-12)
    with pytest.raises(ValueError, match="outer_loss: TeacherKL needs a full-data model"):
        TeacherKL().build(ctx, x, y)


def test_next_token_on_the_last_targets_is_the_cross_entropy_there_by_hand():
    ctx = context(ReverseAdam(lr=0.05, steps=2))
    x, y = batch()  # row 0 left-padded: targets at positions 2-4; row 1: 0-4
    params = dict(ctx.learner.named_parameters())
    with torch.no_grad():
        logp = torch.log_softmax(ctx.learner(x), -1)

    def by_hand(positions):
        return sum(-float(logp[b, i, int(y[b, i])]) for b, i in positions) / len(positions)

    assert float(NextToken(last=1).build(ctx, x, y)(params)) == pytest.approx(by_hand([(0, 4), (1, 4)]), rel=1e-12)
    assert float(NextToken(last=2).build(ctx, x, y)(params)) == pytest.approx(
        by_hand([(0, 3), (0, 4), (1, 3), (1, 4)]), rel=1e-12)
    every = [(b, i) for b in range(2) for i in range(5) if int(y[b, i]) != -100]
    for loss in (NextToken(), NextToken(last=9)):
        assert float(loss.build(ctx, x, y)(params)) == pytest.approx(by_hand(every), rel=1e-12)
    with pytest.raises(ValueError, match="NextToken last must be None or an integer >= 1"):
        NextToken(last=0)


def test_feature_match_is_the_mean_squared_distance_of_the_hidden_states_by_hand():
    """SASRec's features are ``ln_f`` of its last block (computed here from ``_hidden``); an LSTM's are its
    recurrent output (from ``rnn``); positions without a target are left out; a teacher of another width and a
    learner without a feature site are refused in one line."""
    from farzi_lightning.learners import RNNLM

    ctx, teacher = context(ReverseAdam(lr=0.05, steps=2)), teacher_model()
    x, y = batch()
    keep = y != -100
    params = dict(ctx.learner.named_parameters())
    value = float(FeatureMatch().build(Context(ctx.learner, ctx.summary, teacher=lambda: teacher), x, y)(params))
    with torch.no_grad():
        mine, theirs = ctx.learner.ln_f(ctx.learner._hidden(x)), teacher.ln_f(teacher._hidden(x))
    assert value == pytest.approx(float(((mine - theirs)[keep] ** 2).mean()), rel=1e-10)
    torch.manual_seed(3)
    lstm, lstm_teacher = (RNNLM(V, d_model=6, n_layers=1).double().eval() for _ in range(2))
    got = float(FeatureMatch().build(Context(lstm, ctx.summary, teacher=lambda: lstm_teacher), x, y)(
        dict(lstm.named_parameters())).detach())
    with torch.no_grad():
        h, h_teacher = lstm.rnn(lstm.embed(x))[0], lstm_teacher.rnn(lstm_teacher.embed(x))[0]
    assert got == pytest.approx(float(((h - h_teacher)[keep] ** 2).mean()), rel=1e-10)
    # A tuned teacher of one checkpoint (``TeacherModel``, at any temperature) has its member's features; an
    # ensemble has no single feature space and is refused.
    from farzi_lightning.teacher import TeacherModel

    wrapped = float(FeatureMatch().build(Context(ctx.learner, ctx.summary, teacher=lambda: TeacherModel(
        [teacher], temperature=2.0)), x, y)(params))
    assert wrapped == pytest.approx(value, rel=1e-12)
    with pytest.raises(ValueError, match="a teacher of one model; TeacherModel has none"):
        FeatureMatch().build(Context(ctx.learner, ctx.summary, teacher=lambda: TeacherModel([teacher, teacher])),
                             x, y)
    wide = SASRec(V, d_model=16, n_layers=1, n_heads=1, max_len=5).double().eval()
    with pytest.raises(ValueError, match="FeatureMatch needs the teacher's width"):
        FeatureMatch().build(Context(ctx.learner, ctx.summary, teacher=lambda: wide), x, y)(params)
    with pytest.raises(ValueError, match="outer_loss: FeatureMatch needs a full-data model"):
        FeatureMatch().build(ctx, x, y)


@pytest.mark.parametrize("loss", [TeacherKL(), Weighted([NextToken(), TeacherKL()], [1.0, 0.3]), FeatureMatch(),
                                  Weighted([NextToken(), FeatureMatch()], [1.0, 2.0]), NextToken(last=1)],
                         ids=["teacher_kl", "weighted", "feature_match", "next_token_plus_features", "last_target"])
def test_meta_gradient_of_any_outer_loss_equals_the_float64_unrolled_reference(loss):
    teacher = teacher_model()

    def step(inner):
        outer = OuterStep(context(inner, teacher), RandomStart(), meta_batch_size=2, loss=loss)
        return outer(lambda d: torch.Generator().manual_seed(50 + d), lambda g: batch())

    reverse, unrolled = step(ReverseAdam(lr=0.05, steps=3)), step(UnrolledAdam(lr=0.05, steps=3))
    assert reverse.grad_norm > 0
    for a, b in zip(reverse.grads, unrolled.grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_shared_real_batch_is_drawn_once_from_the_steps_own_stream():
    calls = []

    def real(generator):
        calls.append(int(torch.randint(10**9, (1,), generator=generator)))
        return batch()

    seeds = lambda d: torch.Generator().manual_seed(1000 + d)  # noqa: E731
    OuterStep(context(ReverseAdam(lr=0.05, steps=2)), RandomStart(), meta_batch_size=3, share_real_batch=True)(
        seeds, real)
    assert calls == [int(torch.randint(10**9, (1,), generator=seeds(-1)))]  # once, from draw -1's stream
    calls.clear()
    OuterStep(context(ReverseAdam(lr=0.05, steps=2)), RandomStart(), meta_batch_size=3)(seeds, real)
    assert calls == [int(torch.randint(10**9, (1,), generator=seeds(d))) for d in range(3)]  # one per draw


def test_real_batch_size_draws_or_takes_everything():
    data = TensorDataset(torch.arange(20).reshape(10, 2), torch.arange(20).reshape(10, 2))
    loader = DataLoader(data, batch_size=4)
    x, _ = real_batch(loader, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert x.shape == (4, 2)
    x, _ = real_batch(loader, torch.Generator().manual_seed(0), torch.device("cpu"), size=7)
    rows = torch.randint(10, (7,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, data.tensors[0][rows])
    x, _ = real_batch(loader, torch.Generator().manual_seed(0), torch.device("cpu"), size=0)
    assert torch.equal(x, data.tensors[0])


def test_relative_clip_follows_the_running_average_by_hand():
    clip = RelativeClip(2.0, decay=0.9)
    assert clip_limit(None, clip, 10.0) is None  # the first step sets the average
    assert clip.average == 10.0
    assert clip_limit(None, clip, 30.0) == 20.0  # clipped at 2 x 10; the average takes the clipped 20
    assert clip.average == pytest.approx(0.9 * 10 + 0.1 * 20)
    assert clip_limit(5.0, clip, 5.0) == 5.0  # the absolute limit is lower
    assert clip.average == pytest.approx(0.9 * 11 + 0.1 * 5)
    restored = RelativeClip(2.0)
    restored.load_state_dict(clip.state_dict())
    assert restored.limit() == clip.limit()
    with pytest.raises(ValueError, match="factor > 0"):
        RelativeClip(0.0)


@pytest.mark.parametrize("summary_kind", ["latent", "token_fixed_inputs"])
@pytest.mark.parametrize("inner_kind", ["reverse", "unrolled"])
def test_stacked_draws_equal_the_sequential_draws_in_float64(summary_kind, inner_kind):
    """``batch_draws``: m = 4 draws as one stacked trajectory give the mean meta-gradient, learnt-lr gradient and
    statistics of the four draws taken one after another (warm starts, row-sparse summaries, a real batch each)."""
    from farzi_lightning.starts import SummaryWarmStart
    from farzi_lightning.summaries import TokenSummary

    def step(batch_draws):
        inner = (ReverseAdam if inner_kind == "reverse" else UnrolledAdam)(lr=0.05, steps=4)
        ctx = context(inner)
        if summary_kind != "latent":
            ctx.summary = TokenSummary(V, 4, 6, padding_idx=0, inputs="fixed").double()
            ctx.summary.initialize(torch.randint(1, V, (10, 6)), torch.Generator().manual_seed(0))
            ctx.feed = Feed("hard")
        log_lr = torch.tensor(0.05).log().double()
        outer = OuterStep(ctx, SummaryWarmStart(RandomStart(), max_steps=3), meta_batch_size=4, log_inner_lr=log_lr,
                          batch_draws=batch_draws)

        def real(generator):
            rows = torch.randint(1, V, (3, 6), generator=generator)
            return rows[:, :-1], rows[:, 1:]

        return outer(lambda draw: torch.Generator().manual_seed(200 + draw), real)

    sequential, stacked = step(False), step(True)
    assert len(stacked.grads) == len(sequential.grads) == {"latent": 3, "token_fixed_inputs": 2}[summary_kind]
    assert float(sequential.grad_norm) > 0
    for a, b in zip(stacked.grads, sequential.grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(stacked.stats[:2], sequential.stats[:2], rtol=1e-10, atol=0)


def test_shared_warm_up_length_is_one_per_step_and_the_same_on_every_process(monkeypatch):
    """``SummaryWarmStart(share_steps=True)``: the draws of one outer step (on process 0 and on process 1) warm up
    for the same k, drawn from the step's shared stream; another step draws another k; without sharing each
    draw has its own."""
    import farzi_lightning.starts as starts
    from farzi_lightning.starts import SummaryWarmStart

    lengths = []
    real_train_steps = starts.train_steps
    monkeypatch.setattr(starts, "train_steps", lambda learner, rows, feed, opt, schedule, **kw: (
        lengths.append(len(schedule)), real_train_steps(learner, rows, feed, opt, schedule, **kw))[1])

    def run(share, step, rank):
        lengths.clear()
        outer = OuterStep(context(ReverseAdam(lr=0.05, steps=2)), SummaryWarmStart(RandomStart(), 40, share),
                          meta_batch_size=3)
        outer(lambda draw: torch.Generator().manual_seed(1000 * step + 7 * draw + 5), lambda g: batch(), rank)
        return list(lengths)

    first, other_rank, second = run(True, 0, 0), run(True, 0, 1), run(True, 1, 0)
    assert len(first) == 3 and len(set(first)) == 1 and first == other_rank  # k=0 would skip training
    assert second[0] != first[0]
    assert len(set(run(False, 0, 0))) > 1
