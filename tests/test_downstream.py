"""The downstream harness against independent references: LearnerModule training, hand-computed count floors,
the teacher baseline's construction, and its promise to leave global random state alone."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from farzi_lightning import Downstream, LearnerModule
from farzi_lightning.data import InteractionDataModule, TextDataModule
from farzi_lightning.inner import ReverseAdam
from farzi_lightning.learners import SASRec
from farzi_lightning.summaries import Feed, RandomSampleSummary, TeacherSampleSummary, make_baseline


def interactions(tmp_path: Path, users: int = 12, items: int = 15, per_user: int = 9) -> InteractionDataModule:
    """A synthetic log: user u rates items (u + 2j) mod items in time order (every user has 9 events)."""
    lines = [f"{u}\t{(u + 2 * j) % items + 1}\t5\t{j}" for u in range(users) for j in range(per_user)]
    (tmp_path / "log.tsv").write_text("\n".join(lines) + "\n")
    return InteractionDataModule(data_dir=str(tmp_path), file="log.tsv", seq_len=5, batch_size=64, verify=False,
                                 download=False)


class Rows(LightningDataModule):
    """Fixed training rows as (x, y) batches of all rows, plus another data module's test split."""

    def __init__(self, rows: torch.Tensor, data) -> None:
        super().__init__()
        self.rows, self.data = rows, data

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.rows[:, :-1], self.rows[:, 1:]), batch_size=len(self.rows))

    def test_dataloader(self):
        return self.data.test_dataloader()


def test_harness_equals_learner_module_on_the_same_sequences(tmp_path):
    data = interactions(tmp_path)
    learner = SASRec(data.vocab_size, d_model=8, n_layers=1, n_heads=1, max_len=5, dropout=0.0)
    steps, lr = 7, 0.01
    harness = Downstream(candidates=["random"], seeds=1, optimizer="adam", lr=lr, steps=steps, batch_size=1_000,
                         eval_every=steps, k=3)
    scores = harness.evaluate(summary=RandomSampleSummary(data.vocab_size, 6, 6, padding_idx=0), feed=Feed("hard"),
                              learner=learner, inner=ReverseAdam(lr=lr, steps=steps), inner_batch_size=0, data=data,
                              split="test")
    score = scores[("sasrec", "random")]
    # The same rows (the baseline draws them with Generator(seed)), the same init (torch.manual_seed(seed)).
    rows = make_baseline("random", data.vocab_size, 6, 6, 0, data.real_sequences(),
                         torch.Generator().manual_seed(0)).tokens
    torch.manual_seed(0)
    reference = LearnerModule(SASRec(data.vocab_size, d_model=8, n_layers=1, n_heads=1, max_len=5, dropout=0.0),
                              optimizer=lambda p: torch.optim.Adam(p, lr=lr), k=3)
    trainer = Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0)
    rows_data = Rows(rows, data)
    trainer.fit(reference, datamodule=rows_data)
    expected = trainer.test(reference, datamodule=rows_data, verbose=False)[0]
    assert score.best_steps == [steps]
    assert score.values["hr@3"][0] == pytest.approx(expected["test/hr@3"], abs=1e-9)
    assert score.values["ndcg@3"][0] == pytest.approx(expected["test/ndcg@3"], abs=1e-6)


def test_popularity_floor_matches_hand_computation(tmp_path):
    # Items 1..4. Training events: u0: 1 2 | u1: 1 3 | u2: 1 2 (then valid, test). Counts: 1:3, 2:2, 3:1, 4:0.
    log = "0\t1\t5\t1\n0\t2\t5\t2\n0\t3\t5\t3\n0\t4\t5\t4\n" \
          "1\t1\t5\t1\n1\t3\t5\t2\n1\t2\t5\t3\n1\t4\t5\t4\n" \
          "2\t1\t5\t1\n2\t2\t5\t2\n2\t4\t5\t3\n2\t3\t5\t4\n"
    (tmp_path / "log.tsv").write_text(log)
    data = InteractionDataModule(data_dir=str(tmp_path), file="log.tsv", seq_len=3, verify=False, download=False)
    assert data.train_counts()[1:].tolist() == [3, 2, 1, 0]
    harness = Downstream(candidates=["popularity"], k=1)
    learner = SASRec(data.vocab_size, d_model=8, n_layers=1, n_heads=1, max_len=3)
    result = harness.evaluate(summary=RandomSampleSummary(data.vocab_size, 2, 3, 0), feed=Feed(), learner=learner,
                              inner=ReverseAdam(lr=0.1, steps=1), inner_batch_size=0, data=data, split="test")
    # Test: u0 saw {1,2,3}, target 4 -> only 4 left: hit. u1 saw {1,3,2}, target 4: hit. u2 saw {1,2,4},
    # target 3: rank 0 among {3}: hit. All three hit at k=1.
    assert result[("sasrec", "popularity")].values["hr@1"] == [1.0]
    valid = harness.evaluate(summary=RandomSampleSummary(data.vocab_size, 2, 3, 0), feed=Feed(), learner=learner,
                             inner=ReverseAdam(lr=0.1, steps=1), inner_batch_size=0, data=data, split="valid")
    # Valid: u0 saw {1,2}, target 3; candidates 3 (count 1), 4 (0): hit. u1 saw {1,3}, target 2 (2) vs 4: hit.
    # u2 saw {1,2}, target 4 (0) vs 3 (1): miss. HR@1 = 2/3; nDCG@1 the same.
    assert valid[("sasrec", "popularity")].values["hr@1"] == [pytest.approx(2 / 3)]


def test_unigram_floor_matches_hand_computation(tmp_path):
    train, valid, test = "a b a\nc a\n", "a c\n", "b a a\n"
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (tmp_path / f"{split}.txt").write_text(text)
    data = TextDataModule(data_dir=str(tmp_path), name="tiny", seq_len=2, batch_size=4, verify=False, download=False)
    counts = Counter(train.replace("\n", " <eos> ").split())
    total = sum(counts.values())
    # Every test token but the first is predicted once.
    targets = test.replace("\n", " <eos> ").split()[1:]
    expected = math.exp(-sum(math.log(counts[w] / total) for w in targets) / len(targets))
    from farzi_lightning.learners import TransformerLM

    learner = TransformerLM(data.vocab_size, d_model=8, n_layers=1, n_heads=1, max_len=2)
    result = Downstream(candidates=["unigram", "popularity"]).evaluate(
        summary=RandomSampleSummary(data.vocab_size, 2, 3), feed=Feed(), learner=learner,
        inner=ReverseAdam(lr=0.1, steps=1), inner_batch_size=0, data=data, split="test")
    assert list(result) == [("transformerlm", "unigram")]  # popularity is the interaction floor: skipped
    assert result[("transformerlm", "unigram")].values["ppl"][0] == pytest.approx(expected, rel=1e-6)


def test_teacher_baseline_targets_are_the_teachers_with_the_real_token_on_top():
    torch.manual_seed(0)
    V, real = 9, torch.randint(1, 9, (10, 6))
    teacher = SASRec(V, d_model=8, n_layers=1, n_heads=1, max_len=6).eval()
    baseline = make_baseline("teacher", V, 4, 6, 0, real, torch.Generator().manual_seed(3), teacher,
                             targets="lifted")
    assert isinstance(baseline, TeacherSampleSummary)
    probs = baseline()
    assert torch.equal(probs.argmax(-1), baseline.tokens)  # hard inputs read the real rows
    assert torch.all(probs[..., 0] == 0)  # never padding
    with torch.no_grad():
        logits = teacher(baseline.tokens[:, :-1])
    logits[..., 0] = float("-inf")
    expected = torch.softmax(logits, -1)
    # Off the real token, the distribution is the teacher's up to one normalising factor per position.
    mask = torch.ones_like(expected, dtype=torch.bool).scatter_(-1, baseline.tokens[:, 1:, None], False)
    mask[..., 0] = False
    ratio = (probs[:, 1:] / expected)[mask].view(4, 5, -1)
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="teacher baseline needs a full-data model"):
        make_baseline("teacher", V, 4, 6, 0, real)


def test_harness_restores_global_rng_and_validates_arguments(tmp_path):
    data = interactions(tmp_path)
    learner = SASRec(data.vocab_size, d_model=8, n_layers=1, n_heads=1, max_len=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    Downstream(candidates=["random", "head"], seeds=2, steps=3, eval_every=2).evaluate(
        summary=RandomSampleSummary(data.vocab_size, 4, 6, 0), feed=Feed(), learner=learner,
        inner=ReverseAdam(lr=0.01, steps=3), inner_batch_size=2, data=data, split="valid")
    assert torch.equal(torch.get_rng_state(), before)
    for kwargs, match in (({"candidates": ["nope"]}, "unknown 'nope'"), ({"seeds": 0}, "seeds must be"),
                          ({"steps": 0}, "steps must be"), ({"lr": -1.0}, "lr must be positive"),
                          ({"optimizer": "lbfgs"}, "optimizer must be")):
        with pytest.raises(ValueError, match=match):
            Downstream(**kwargs)


def test_early_stopping_keeps_the_best_validation_point(tmp_path):
    data = interactions(tmp_path)
    learner = SASRec(data.vocab_size, d_model=8, n_layers=1, n_heads=1, max_len=5)
    harness = Downstream(candidates=["head"], seeds=1, steps=12, eval_every=3, lr=0.05, k=3)
    score = harness.evaluate(summary=RandomSampleSummary(data.vocab_size, 4, 6, 0), feed=Feed(), learner=learner,
                             inner=ReverseAdam(lr=0.05, steps=12), inner_batch_size=2, data=data,
                             split="valid")[("sasrec", "head")]
    curve = dict(score.curves[0])
    assert sorted(curve) == [3, 6, 9, 12]
    best = max(curve, key=lambda s: (curve[s], -s))
    assert score.best_steps == [best]
    assert score.values["ndcg@3"][0] == pytest.approx(curve[best])  # valid scored at the kept point


def test_learners_restrict_the_harness_to_named_architectures(tmp_path):
    """Cross-architecture rows alone (``learners=["rnnlm"]``) are the same scores as the RNN's rows of a run that
    trains every architecture: a learner's jobs do not depend on which others run."""
    data = interactions(tmp_path)
    learner = SASRec(data.vocab_size, d_model=8, n_layers=1, n_heads=1, max_len=5)
    gru = {"class_path": "farzi_lightning.learners.RNNLM", "init_args": {"d_model": 8, "cell": "gru", "max_len": 5}}
    common = dict(summary=RandomSampleSummary(data.vocab_size, 4, 6, 0), feed=Feed(), learner=learner,
                  inner=ReverseAdam(lr=0.01, steps=4), inner_batch_size=2, data=data, split="valid")
    harness = Downstream(candidates=["random", "head"], learners=[gru], seeds=2, steps=4, eval_every=2)
    every = harness.evaluate(**common)
    assert sorted(every) == [("rnnlm", "head"), ("rnnlm", "random"), ("sasrec", "head"), ("sasrec", "random")]
    only = Downstream(candidates=["random", "head"], learners=[gru], seeds=2, steps=4, eval_every=2).evaluate(
        **common, learners=["rnnlm"])
    assert sorted(only) == [("rnnlm", "head"), ("rnnlm", "random")]
    for key in only:
        assert only[key].values == every[key].values
