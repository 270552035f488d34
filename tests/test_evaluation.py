"""Evaluation a reviewer would accept: ungameable rank metrics, selection on validation with patience, paired
statistics, baselines cached by their recipe, inputs held apart from targets, tuned teachers, compact files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from farzi_lightning import Downstream, Teacher, TeacherModel, fresh, load_summary
from farzi_lightning.bilevel import inner_loss
from farzi_lightning.data import InteractionDataModule
from farzi_lightning.downstream import paired_differences, paired_table, table
from farzi_lightning.export import save_summary, summary_payload
from farzi_lightning.inner import ReverseAdam, ReverseAdamW
from farzi_lightning.learners import SASRec
from farzi_lightning.metrics import NDCG, HitRate, NonFiniteScores, Perplexity
from farzi_lightning.retrain import evaluate_summary
from farzi_lightning.stats import interval, nested, paired, t975
from farzi_lightning.summaries import (
    Feed,
    LatentSummary,
    RandomSampleSummary,
    TeacherSampleSummary,
    TokenSummary,
    make_baseline,
)
from farzi_lightning.trajectories import TrajectoryBank


def interactions(tmp_path: Path, users: int = 12, items: int = 15, per_user: int = 9) -> InteractionDataModule:
    """A synthetic log: user u rates items (u + 2j) mod items in time order."""
    lines = [f"{u}\t{(u + 2 * j) % items + 1}\t5\t{j}" for u in range(users) for j in range(per_user)]
    (tmp_path / "log.tsv").write_text("\n".join(lines) + "\n")
    return InteractionDataModule(data_dir=str(tmp_path), file="log.tsv", seq_len=5, batch_size=64, verify=False,
                                 download=False)


# ---- 1. rank metrics that cannot be gamed ----

def test_constant_scores_get_chance_not_a_perfect_score():
    n_items, users = 50, 8
    scores, target = torch.zeros(users, n_items), torch.randint(0, n_items, (users,))
    hr, ndcg = HitRate(k=10), NDCG(k=10)
    hr.update(scores, target)
    ndcg.update(scores, target)
    # A random tie-break puts the target at each of the 50 places with probability 1/50.
    assert float(hr.compute()) == pytest.approx(10 / n_items)
    expected = sum(1 / math.log2(p + 2) for p in range(10)) / n_items
    assert float(ndcg.compute()) == pytest.approx(expected)


def test_ties_are_split_evenly_hand_computed():
    # Target 0 ties with item 1 at the top, item 2 below: places 0 or 1 with probability 1/2 each.
    scores, target = torch.tensor([[1.0, 1.0, 0.0, -1.0]]), torch.tensor([0])
    hr1, ndcg2 = HitRate(k=1), NDCG(k=2)
    hr1.update(scores, target)
    ndcg2.update(scores, target)
    assert float(hr1.compute()) == pytest.approx(0.5)
    assert float(ndcg2.compute()) == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    # Excluded items never tie: with item 1 excluded the target is alone at the top.
    hr1 = HitRate(k=1)
    hr1.update(scores, target, torch.tensor([[False, True, False, False]]))
    assert float(hr1.compute()) == 1.0


def test_nan_or_infinite_scores_are_errors_not_hits():
    target = torch.tensor([2, 0])
    for bad in (math.nan, math.inf, -math.inf):
        scores = torch.randn(2, 5)
        scores[1, 3] = bad
        with pytest.raises(NonFiniteScores, match="NaN or infinite"):
            HitRate(k=3).update(scores, target)
    everything_nan = torch.full((2, 5), math.nan)
    with pytest.raises(NonFiniteScores):
        NDCG(k=10).update(everything_nan, target)
    # A NaN on an excluded candidate does not matter: it is not ranked.
    scores = torch.randn(2, 5)
    scores[1, 3] = math.nan
    HitRate(k=3).update(scores, target, torch.tensor([[False] * 5, [False, False, False, True, False]]))
    with pytest.raises(NonFiniteScores, match="loss on real data"):
        Perplexity().update(torch.full((1, 3, 4), math.nan), torch.tensor([[0, 1, 2]]))


class Constant(nn.Module):
    """A learner whose scores ignore its input (constant or NaN)."""

    def __init__(self, vocab_size: int, value: float) -> None:
        super().__init__()
        self.vocab_size, self.value = vocab_size, value
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.full((*tokens.shape[:2], self.vocab_size), self.value) + self.bias * 0


def test_harness_scores_a_constant_learner_at_chance_and_names_a_nan_learner(tmp_path, monkeypatch):
    data = interactions(tmp_path)
    harness = Downstream(candidates=["summary"], k=2)
    score = harness.score(Constant(data.vocab_size, 1.0), data.test_dataloader(), None)
    # Each user's candidates: items not seen before (padding never); constant scores hit with chance 2 / N_u.
    candidates = [int(data.vocab_size - 1 - seen[1:].sum()) for _, _, s in data.test_dataloader() for seen in s]
    assert score["hr@2"] == pytest.approx(sum(min(2, n) / n for n in candidates) / len(candidates))
    assert score["hr@2"] < 1.0  # the old rank (strictly above) gave 1.0
    with pytest.raises(NonFiniteScores, match="downstream sasrec/summary seed 0, step 2: .*NaN"):
        learner = SASRec(data.vocab_size, d_model=8, n_layers=1, n_heads=1, max_len=5)
        summary = RandomSampleSummary(data.vocab_size, 4, 6, 0)
        summary.initialize(data.real_sequences())
        summary.tokens[0, 0] = 1

        def poisoned(learner, loader, k, max_batches):
            raise NonFiniteScores("3 NaN or infinite scores in 1 of 12 rankings")

        monkeypatch.setattr(fresh, "score", poisoned)
        Downstream(candidates=["summary"], seeds=1, steps=4, eval_every=2).evaluate(
            summary=summary, feed=Feed("hard"), learner=learner, inner=ReverseAdam(lr=0.01, steps=4),
            inner_batch_size=2, data=data, split="test")


# ---- 2 and 3. selection on validation, patience, the cap ----

class Scripted:
    """Replaces ``fresh.score`` (what the training loop scores with): validation returns a scripted curve (by
    check number), the final split returns the value scripted for the step whose weights it is handed (weights
    identified by their digest)."""

    def __init__(self, valid: list[float], test: list[float], eval_every: int) -> None:
        self.valid, self.test, self.eval_every = valid, test, eval_every
        self.seen: dict[float, int] = {}
        self.checks = 0

    @staticmethod
    def digest(model: nn.Module) -> float:
        with torch.no_grad():
            return round(float(sum((p.double() * (i + 1)).sum() for i, p in enumerate(model.parameters()))), 9)

    def __call__(self, harness, model, loader, max_batches):
        if loader == "VAL":
            step = (self.checks + 1) * self.eval_every
            value = self.valid[self.checks]
            self.checks += 1
            self.seen[self.digest(model)] = step
        else:
            value = self.test[self.seen[self.digest(model)] // self.eval_every - 1]
        return {"hr@10": value, "ndcg@10": value}


def run_scripted(tmp_path, monkeypatch, valid, test, steps, patience, progress=None):
    data = interactions(tmp_path)
    data.setup()
    monkeypatch.setattr(data, "val_dataloader", lambda: "VAL")
    monkeypatch.setattr(data, "test_dataloader", lambda: "TEST")
    script = Scripted(valid, test, eval_every=2)
    monkeypatch.setattr(fresh, "score", lambda m, loader, k, b: script(None, m, loader, b))
    harness = Downstream(candidates=["random"], seeds=1, steps=steps, eval_every=2, patience=patience, lr=0.05)
    learner = SASRec(data.vocab_size, d_model=8, n_layers=1, n_heads=1, max_len=5)
    result = harness.evaluate(summary=RandomSampleSummary(data.vocab_size, 4, 6, 0), feed=Feed("hard"),
                              learner=learner, inner=ReverseAdam(lr=0.05, steps=steps), inner_batch_size=2,
                              data=data, split="test", progress=progress)
    return result[("sasrec", "random")], script


def test_reports_the_test_metric_at_the_validation_best_step_not_the_last_or_the_test_best(tmp_path, monkeypatch):
    valid = [0.10, 0.50, 0.20, 0.30]  # validation best at step 4; the last check (8) is not the best
    test = [0.90, 0.30, 0.10, 0.80]   # test best at step 2, test at the last step 0.80
    score, script = run_scripted(tmp_path, monkeypatch, valid, test, steps=8, patience=None)
    assert score.best_steps == [4]
    assert score.values["hr@10"] == [0.30]  # the validation-best step's test value, nothing else
    assert [s for s, _ in score.curves[0]] == [2, 4, 6, 8]


def test_patience_stops_after_p_checks_without_improvement(tmp_path, monkeypatch):
    valid = [0.1, 0.2, 0.3, 0.25, 0.28, 0.9, 0.95]  # best at step 6; two worse checks stop it at step 10
    score, script = run_scripted(tmp_path, monkeypatch, valid, [0.0] * 7, steps=14, patience=2)
    assert script.checks == 5
    assert score.best_steps == [6] and score.capped == [False]
    assert [s for s, _ in score.curves[0]] == [2, 4, 6, 8, 10]


def test_a_run_still_improving_at_the_cap_says_so(tmp_path, monkeypatch):
    lines = []
    valid = [0.1, 0.2, 0.3, 0.4]
    score, _ = run_scripted(tmp_path, monkeypatch, valid, [0.0, 0.0, 0.0, 0.7], steps=8, patience=3,
                            progress=lines.append)
    assert score.best_steps == [8] and score.capped == [True]
    assert score.values["hr@10"] == [0.7]
    assert any("hit the cap of 8 steps" in line for line in lines)
    assert "8!" in table({("sasrec", "random"): score})


# ---- 4. paired statistics; baselines cached by their recipe ----

def test_t_interval_hand_computed():
    assert t975(2) == pytest.approx(4.303) and t975(1000) == pytest.approx(1.96, abs=1e-3)
    iv = interval([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: 2 ± 4.303 / √3 = [-0.484, 4.484]
    assert iv.mean == 2.0
    assert iv.hi - iv.mean == pytest.approx(4.303 / math.sqrt(3))
    assert iv.lo == pytest.approx(-0.48434, abs=1e-5) and not iv.excludes_zero
    assert interval([2.0, 2.5, 3.0]).excludes_zero  # 2.5 ± 1.242
    assert not interval([1.0, -1.0, 0.5]).excludes_zero
    assert paired([0.3, 0.4, 0.5], [0.1]).mean == pytest.approx(0.3)  # a reference pairs with every seed
    with pytest.raises(ValueError, match="same seeds"):
        paired([0.1, 0.2], [0.1, 0.2, 0.3])
    # Distillation seeds are the unit: the mean difference of each, then the interval over them.
    iv = nested([[0.2, 0.4], [0.3, 0.3], [0.5, 0.3]], [[0.1, 0.1], [0.1, 0.1], [0.1, 0.1]])
    # per distillation seed: 0.2, 0.2, 0.3 -> mean 0.2333, sd 0.0577, half-width 4.303 · 0.0577 / √3 = 0.1434
    assert iv.n == 3 and iv.mean == pytest.approx(0.7 / 3) and iv.lo == pytest.approx(0.0899, abs=1e-4)


def test_paired_differences_pair_by_seed(tmp_path):
    from farzi_lightning.downstream import Score

    results = {("sasrec", "summary"): Score(values={"hr@10": [0.20, 0.22, 0.21]}),
               ("sasrec", "teacher"): Score(values={"hr@10": [0.19, 0.20, 0.21]}),
               ("sasrec", "popularity"): Score(values={"hr@10": [0.08]})}
    rows = paired_differences(results)
    assert rows[("sasrec", "teacher", "hr@10")].mean == pytest.approx(0.01)
    assert not rows[("sasrec", "teacher", "hr@10")].excludes_zero
    assert rows[("sasrec", "popularity", "hr@10")].excludes_zero
    assert "| sasrec | popularity | hr@10 |" in paired_table(results)


def test_baselines_are_retrained_when_the_recipe_changes(tmp_path):
    data = interactions(tmp_path)
    learner = SASRec(data.vocab_size, d_model=8, n_layers=1, n_heads=1, max_len=5)
    summary = RandomSampleSummary(data.vocab_size, 4, 6, 0)
    harness = Downstream(candidates=["head"], seeds=1, steps=6, eval_every=3, patience=None)

    def run(lr):
        return harness.evaluate(summary=summary, feed=Feed(), learner=learner, inner=ReverseAdam(lr=lr, steps=6),
                                inner_batch_size=2, data=data, split="valid")[("sasrec", "head")]

    slow, fast = run(1e-4), run(0.5)
    alone = Downstream(candidates=["head"], seeds=1, steps=6, eval_every=3, patience=None).evaluate(
        summary=summary, feed=Feed(), learner=learner, inner=ReverseAdam(lr=0.5, steps=6), inner_batch_size=2,
        data=data, split="valid")[("sasrec", "head")]
    assert fast.curves == alone.curves  # trained with its own recipe, not served from the first one's cache
    assert fast.curves != slow.curves
    assert run(1e-4) is slow  # the same recipe is still served from the cache


def test_a_summary_file_retrains_with_its_own_recipe(tmp_path):
    """``evaluate_summary`` (``farzi_lightning.retrain``, ``benchmarks/check_summary.py``) trains as the file's
    recipe says, patience, optimiser and weight decay included: the very curves of the harness that wrote the
    file, not the harness's defaults."""
    data = interactions(tmp_path)
    torch.manual_seed(0)
    learner = SASRec(data.vocab_size, d_model=8, n_layers=1, n_heads=1, max_len=5)
    summary = TokenSummary(data.vocab_size, 4, 6, init="noise", padding_idx=0)
    inner = ReverseAdamW(lr=0.05, steps=40, weight_decay=2.0)
    harness = Downstream(candidates=["summary"], seeds=2, steps=40, eval_every=2, patience=2)
    wrote = harness.evaluate(summary=summary, feed=Feed(), learner=learner, inner=inner, inner_batch_size=2,
                             data=data, split="valid")[("sasrec", "summary")]
    save_summary(tmp_path / "s.pt", summary_payload(summary, [str(i) for i in range(data.vocab_size)], Feed(),
                                                    learner, harness.recipe(inner, 2)))
    loaded = load_summary(tmp_path / "s.pt")
    assert loaded.recipe["optimizer"] == "adamw" and loaded.recipe["patience"] == 2
    again = evaluate_summary(loaded, data, "valid")[("sasrec", "summary")]
    assert again.curves == wrote.curves and again.values == wrote.values
    defaults = Downstream(candidates=["summary"], seeds=2, steps=40, eval_every=2).evaluate(
        summary=summary, feed=Feed(), learner=learner, inner=ReverseAdam(lr=0.05, steps=40), inner_batch_size=2,
        data=data, split="valid")[("sasrec", "summary")]
    assert defaults.curves != wrote.curves  # patience 5 and plain Adam train otherwise: the check can fail
    more = evaluate_summary(loaded, data, "valid", seeds=3)[("sasrec", "summary")]
    assert len(more.curves) == 3 and more.curves[:2] == wrote.curves  # more downstream seeds, the first ones kept
    loaded.recipe["optimizer"] = "forwardoptimizer"
    with pytest.raises(ValueError, match="forwardoptimizer.*pass that inner optimiser"):
        evaluate_summary(loaded, data, "valid")


# ---- 5. inputs and targets held apart ----

def test_teacher_targets_are_the_teachers_own_distributions_and_inputs_the_real_rows():
    torch.manual_seed(0)
    V, real = 9, torch.randint(1, 9, (10, 6))
    teacher = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=6).eval()
    baseline = make_baseline("teacher", V, 4, 6, 0, real, torch.Generator().manual_seed(3), teacher)
    assert baseline.targets == "teacher"
    with torch.no_grad():
        logits = teacher(baseline.tokens[:, :-1])
    logits[..., 0] = float("-inf")
    torch.testing.assert_close(baseline()[:, 1:], torch.softmax(logits, -1))
    assert torch.equal(baseline.input_ids(), baseline.tokens)
    inputs, targets = Feed("soft")(baseline(), baseline.input_ids())  # ids win over the input mode
    assert torch.equal(inputs.argmax(-1), baseline.tokens[:, :-1]) and torch.all(inputs.sum(-1) == 1)
    torch.testing.assert_close(targets, torch.softmax(logits, -1))


@pytest.mark.parametrize("cls", [TokenSummary, LatentSummary])
def test_fixed_input_summary_learns_targets_only(cls):
    torch.manual_seed(0)
    V, real = 9, torch.randint(1, 9, (10, 6))
    teacher = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=6).eval()
    summary = cls(V, 4, 6, init="teacher", padding_idx=0, inputs="fixed")
    summary.initialize(real, torch.Generator().manual_seed(3), teacher)
    expected = make_baseline("teacher", V, 4, 6, 0, real, torch.Generator().manual_seed(3), teacher)
    assert torch.equal(summary.input_ids(), expected.tokens) and torch.equal(summary.decode(), expected.tokens)
    torch.testing.assert_close(summary()[:, 1:], expected()[:, 1:], atol=1e-4, rtol=1e-3)
    # The inner loss reads the fixed tokens; the parameters reach it through the targets alone.
    learner = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=6, dropout=0.0)
    params = dict(learner.named_parameters())
    hyper = tuple(p.detach().clone().requires_grad_(True) for p in summary.parameters())
    loss = inner_loss(learner, summary, torch.tensor([[0, 2]]), Feed("soft"))(params, hyper, 0)
    inputs = torch.nn.functional.one_hot(summary.input_ids()[[0, 2], :-1], V).float()
    manual = -(summary.functional(hyper, torch.tensor([0, 2]))[:, 1:] * torch.log_softmax(learner(inputs), -1)
               ).sum(-1).mean()
    torch.testing.assert_close(loss, manual)
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(loss, hyper))
    with pytest.raises(ValueError, match="inputs must be"):
        cls(V, 4, 6, inputs="loose")


# ---- 6. the teacher: any checkpoint, a temperature, an ensemble ----

def write_bank(root: Path, V: int = 9, runs: int = 2, steps: tuple[int, ...] = (0, 10, 20, 30, 40)) -> Path:
    """A bank by hand: runs × checkpoints of a tiny SASRec, the best validation at step 20 of run seed-1."""
    config = {"class_path": "farzi_lightning.learners.SASRec",
              "init_args": {"vocab_size": V, "d_model": 8, "n_layers": 1, "n_heads": 1, "max_len": 6}}
    entries = []
    for r in range(runs):
        (root / f"seed-{r}").mkdir(parents=True)
        for step in steps:
            torch.manual_seed(100 * r + step)
            state = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=6).state_dict()
            torch.save(state, root / f"seed-{r}" / f"step-{step:07d}.pt")
            metric = 0.5 if (r, step) == (1, 20) else 0.1 + step / 1000
            entries.append({"run": f"seed-{r}", "step": step, "max_step": steps[-1],
                            "file": f"seed-{r}/step-{step:07d}.pt", "metrics": {"val/ndcg@10": metric}})
    (root / "manifest.json").write_text(json.dumps({"fingerprint": None, "vocab_size": V, "learner": config,
                                                    "entries": entries}))
    return root


def test_teacher_picks_checkpoints_runs_and_averages_probabilities(tmp_path):
    bank_dir = write_bank(tmp_path / "bank")
    bank = TrajectoryBank(bank_dir)
    step_of = {i: (e["run"], e["step"]) for i, e in enumerate(bank.entries)}
    picks = {"best": [("seed-1", 20)], "last": [("seed-1", 40)], 0.25: [("seed-1", 10)], 0.6: [("seed-1", 20)],
             33: [("seed-1", 30)]}
    for checkpoint, expected in picks.items():
        assert [step_of[i] for i in Teacher([str(bank_dir)], checkpoint=checkpoint).indices(bank)] == expected
    every = Teacher([str(bank_dir)], checkpoint="last", runs="all")
    assert [step_of[i] for i in every.indices(bank)] == [("seed-0", 40), ("seed-1", 40)]
    # The ensemble's prediction is log of the mean of the members' tempered softmaxes, by hand.
    tokens = torch.randint(1, 9, (3, 5))
    model = Teacher([str(bank_dir)], checkpoint="last", runs="all", temperature=2.0).model()
    members = [bank.model(i) for i in every.indices(bank)]
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(tokens) / 2.0, -1) for m in members]).mean(0)
        torch.testing.assert_close(torch.softmax(model(tokens), -1), expected)
    assert isinstance(model, TeacherModel) and model.max_len == 6
    for bad, match in (({"checkpoint": 1.5}, "fraction"), ({"checkpoint": "first"}, "checkpoint must"),
                       ({"temperature": 0.0}, "temperature"), ({"runs": ["seed-7"]}, "seed-7 not in")):
        with pytest.raises(ValueError, match=match):
            Teacher([str(bank_dir)], **bad).model()


# ---- 8. compact summaries ----

def test_top_k_storage_keeps_the_renormalised_top_k_and_is_small(tmp_path):
    torch.manual_seed(0)
    V = 2000
    summary = TokenSummary(V, 6, 8, init="noise", padding_idx=0, temperature=0.5)
    dense = summary_payload(summary, [str(i) for i in range(V)], Feed("hard"))
    compact = summary_payload(summary, [str(i) for i in range(V)], Feed("hard"), top_k=16)
    save_summary(tmp_path / "dense.pt", dense)
    save_summary(tmp_path / "compact.pt", compact)
    assert (tmp_path / "compact.pt").stat().st_size < 0.1 * (tmp_path / "dense.pt").stat().st_size
    loaded = load_summary(tmp_path / "compact.pt")
    assert type(loaded) is TokenSummary and loaded.feed.input_mode == "hard"
    with torch.no_grad():
        probs = summary()
        values, indices = probs.topk(16, -1)
        expected = torch.zeros_like(probs).scatter_(-1, indices, values / values.sum(-1, keepdim=True))
        torch.testing.assert_close(loaded(), expected, atol=2e-3, rtol=0)  # float16 probabilities
    assert torch.equal(loaded.decode(), summary.decode())
    assert torch.isfinite(loaded.z).all()


def test_compact_teacher_baseline_and_latent_summary_round_trip(tmp_path):
    torch.manual_seed(0)
    V, real = 30, torch.randint(1, 30, (10, 6))
    teacher = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=6).eval()
    baseline = make_baseline("teacher", V, 4, 6, 0, real, torch.Generator().manual_seed(3), teacher)
    save_summary(tmp_path / "t.pt", summary_payload(baseline, [str(i) for i in range(V)], Feed("hard"), top_k=V))
    loaded = load_summary(tmp_path / "t.pt")
    assert type(loaded) is TeacherSampleSummary and torch.equal(loaded.input_ids(), baseline.tokens)
    torch.testing.assert_close(loaded(), baseline(), atol=1e-3, rtol=0)  # k = V: all of it, in float16
    latent = LatentSummary(V, 4, 6, latent_dim=4, init="noise", padding_idx=0)
    save_summary(tmp_path / "l.pt", summary_payload(latent, [str(i) for i in range(V)], top_k=8))
    torch.testing.assert_close(load_summary(tmp_path / "l.pt")(), latent())  # stored as its factors, exactly
    with pytest.raises(ValueError, match="top_k"):
        summary_payload(latent, [], top_k=0)


def test_predict_last_is_the_last_position_of_forward():
    from farzi_lightning.learners import TransformerLM

    torch.manual_seed(0)
    for learner in (SASRec(30, d_model=8, n_layers=2, n_heads=2, max_len=7, dropout=0.0),
                    TransformerLM(30, d_model=8, n_layers=1, n_heads=1, max_len=7, dropout=0.0)):
        tokens = torch.randint(1, 30, (4, 7))
        tokens[0, :3] = 0  # left padding
        with torch.no_grad():
            torch.testing.assert_close(learner.predict_last(tokens), learner(tokens)[:, -1])


def test_low_rank_storage_fits_in_kl_far_better_than_the_log_space_svd(tmp_path):
    """Targets of rank above r: the stored fit's KL to them is well under that of the plain truncated SVD of the
    centred log-probabilities (computed here in float64), and export leaves the global RNG alone."""
    torch.manual_seed(0)
    V, real = 400, torch.randint(1, 400, (40, 9))
    teacher = SASRec(V, d_model=32, n_layers=1, n_heads=1, max_len=9).eval()
    with torch.no_grad():  # a sharp teacher, as trained ones are: most of V carries almost no mass
        teacher.embed.weight.mul_(16.0)
    baseline = make_baseline("teacher", V, 8, 9, 0, real, torch.Generator().manual_seed(3), teacher)
    p = baseline()[:, 1:].double().reshape(-1, V)[:, 1:]  # (N, V - 1): padding excluded
    p = p / p.sum(-1, keepdim=True)
    logp = p.log()
    centred = logp - logp.mean(-1, keepdim=True)
    u, s, vh = torch.linalg.svd(centred, full_matrices=False)
    svd = torch.log_softmax((u[:, :4] * s[:4]) @ vh[:4], -1)

    def kl(logq):
        return float((p * (logp - logq)).sum(-1).mean())

    state = torch.get_rng_state()
    save_summary(tmp_path / "low.pt", summary_payload(baseline, [str(i) for i in range(V)], Feed("hard"), rank=4))
    assert torch.equal(torch.get_rng_state(), state)
    q = load_summary(tmp_path / "low.pt")()[:, 1:].double().reshape(-1, V)[:, 1:]
    fitted = kl(torch.log(q / q.sum(-1, keepdim=True)))
    assert fitted < 0.5 * kl(svd), (fitted, kl(svd))


def test_low_rank_storage_is_exact_for_a_low_rank_teacher_and_small(tmp_path):
    torch.manual_seed(0)
    V, real = 300, torch.randint(1, 300, (30, 9))
    teacher = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=9).eval()  # logits h @ E^T + b: rank <= 9
    baseline = make_baseline("teacher", V, 6, 9, 0, real, torch.Generator().manual_seed(3), teacher)
    vocabulary = [str(i) for i in range(V)]
    save_summary(tmp_path / "dense.pt", summary_payload(baseline, vocabulary, Feed("hard")))
    save_summary(tmp_path / "low.pt", summary_payload(baseline, vocabulary, Feed("hard"), rank=10))
    assert (tmp_path / "low.pt").stat().st_size < 0.5 * (tmp_path / "dense.pt").stat().st_size
    loaded = load_summary(tmp_path / "low.pt")
    assert type(loaded) is TeacherSampleSummary and torch.equal(loaded.input_ids(), baseline.tokens)
    torch.testing.assert_close(loaded()[:, 1:], baseline()[:, 1:], atol=2e-3, rtol=0)  # float16 factors
    assert torch.all(loaded()[..., 0] == 0)  # padding stays impossible
    token = TokenSummary(V, 6, 9, init="teacher", padding_idx=0, inputs="fixed", temperature=2.0)
    token.initialize(real, torch.Generator().manual_seed(3), teacher)
    save_summary(tmp_path / "token.pt", summary_payload(token, vocabulary, Feed("hard"), rank=10))
    torch.testing.assert_close(load_summary(tmp_path / "token.pt")()[:, 1:], token()[:, 1:], atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="not both"):
        summary_payload(token, vocabulary, top_k=4, rank=4)


def test_eight_bit_low_rank_storage_keeps_the_fit_in_fewer_bytes(tmp_path):
    """int8 factors with a scale per position and per token: the rebuilt distributions stay within quantisation
    error of the float16 form (each logit off by at most the bound the scales imply), and the factors take half
    the bytes."""
    torch.manual_seed(0)
    V, real = 300, torch.randint(1, 300, (30, 9))
    teacher = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=9).eval()
    baseline = make_baseline("teacher", V, 6, 9, 0, real, torch.Generator().manual_seed(3), teacher)
    vocabulary = [str(i) for i in range(V)]
    half = summary_payload(baseline, vocabulary, Feed("hard"), rank=10)
    eight = summary_payload(baseline, vocabulary, Feed("hard"), rank=10, bits=8)
    (entry16,), (entry8,) = half["lowrank"].values(), eight["lowrank"].values()
    assert entry8["left"].dtype == entry8["right"].dtype == torch.int8
    assert entry8["left"].abs().max() == 127 and entry8["right"].abs().max() == 127  # the scales use the range
    assert entry8["left"].numel() + entry8["right"].numel() == (entry16["left"].numel() + entry16["right"].numel())
    left = entry8["left"].double() * entry8["left_scale"].double()  # (n, L, r) by hand
    right = entry8["right"].double() * entry8["right_scale"].double()  # (r, V)
    # each product's error: |a b - a' b'| <= |a| db + |b| da + da db, summed over r, with da, db half a step
    d_left = (entry8["left_scale"].double() / 2).expand_as(left)
    d_right = (entry8["right_scale"].double() / 2).expand_as(right)
    bound = left.abs() @ d_right + d_left @ right.abs() + d_left @ d_right
    exact = entry16["left"].double() @ entry16["right"].double()
    assert bool(((left @ right - exact).abs() <= bound + 2e-2).all())  # + float16 rounding of the reference
    save_summary(tmp_path / "eight.pt", eight)
    loaded = load_summary(tmp_path / "eight.pt")
    torch.testing.assert_close(loaded()[:, 1:], baseline()[:, 1:], atol=1e-2, rtol=0)
    assert torch.all(loaded()[..., 0] == 0)
    with pytest.raises(ValueError, match="bits must be 8 or 16"):
        summary_payload(baseline, vocabulary, rank=10, bits=4)
