"""Trajectory bank: written by TrajectoryCheckpoint during a real fit, loaded, sampled, and guarded."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import Callback

from farzi_lightning import TrajectoryBank
from farzi_lightning.cli import build
from farzi_lightning.learners import SASRec

from cli_utils import ROOT, TINY, run, working_in

PRETRAIN = ROOT / "configs" / "ml100k_pretrain.yaml"


@pytest.fixture(scope="module")
def bank(tmp_path_factory, module_data_dir):
    """Two tiny SASRec runs (seeds 0 and 1) on ML-100k in one bank."""
    with working_in(tmp_path_factory.mktemp("bank"), module_data_dir) as root:
        clis = [run("fit", f"--seed_everything={seed}", "--trainer.max_steps=8", "--trainer.limit_train_batches=8",
                    config=ROOT / "configs" / "ml100k_pretrain.yaml") for seed in (0, 1)]
    return root / "runs" / "tiny" / "banks" / "ml100k_sasrec", clis[0]


def test_manifest_records_runs_steps_metrics_and_data(bank):
    path, cli = bank
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["fingerprint"] == cli.datamodule.fingerprint and manifest["vocab_size"] == 1683
    assert manifest["learner"]["class_path"].endswith("SASRec")
    runs = {e["run"] for e in manifest["entries"]}
    assert runs == {"seed-0", "seed-1"}
    steps = sorted(e["step"] for e in manifest["entries"] if e["run"] == "seed-0")
    assert steps[0] == 0 and steps[-1] == 8 and len(steps) >= 3
    assert all(e["max_step"] == 8 for e in manifest["entries"])
    assert any("val/ndcg@10" in e["metrics"] for e in manifest["entries"])


def test_load_and_sample_are_the_saved_weights(bank):
    path, cli = bank
    bank_ = TrajectoryBank(path, fingerprint=cli.datamodule.fingerprint, vocab_size=cli.datamodule.vocab_size)
    last = [i for i, e in enumerate(bank_.entries) if e["run"] == "seed-1" and e["step"] == 8][0]
    final = cli.model.learner.state_dict()  # cli[0] is seed 0: compare with seed-0's last entry instead
    last0 = [i for i, e in enumerate(bank_.entries) if e["run"] == "seed-0" and e["step"] == 8][0]
    assert all(torch.equal(bank_.load(last0)[k], final[k]) for k in final)
    assert not torch.equal(bank_.load(last)["embed.weight"], final["embed.weight"])  # seeds differ
    draws = [bank_.sample(torch.Generator().manual_seed(7)) for _ in range(2)]  # same seed, same draw
    assert all(torch.equal(draws[0][k], draws[1][k]) for k in final)
    copy = bank_.load(last0)
    copy["embed.weight"] += 1.0  # a caller's changes do not leak into the bank's cache
    assert torch.equal(bank_.load(last0)["embed.weight"], final["embed.weight"])
    g = torch.Generator().manual_seed(0)
    learner = SASRec(1683, d_model=16, n_layers=1, max_len=50)
    bank_.check_compatible(learner)
    learner.load_state_dict(bank_.sample(g))


def test_fraction_and_init_filters(bank):
    path, _ = bank
    early = TrajectoryBank(path, max_fraction=0.3, include_init=False)
    assert early.entries and all(0 < e["step"] <= 0.3 * 8 for e in early.entries)
    only_init = TrajectoryBank(path, min_fraction=1.0, max_fraction=1.0, include_init=True)
    assert {e["step"] for e in only_init.entries} == {0, 8}
    with pytest.raises(ValueError, match="no checkpoint in the bank falls within"):
        TrajectoryBank(path, min_fraction=0.01, max_fraction=0.02, include_init=False)


def test_mismatches_are_refused(bank, tmp_path):
    path, cli = bank
    with pytest.raises(ValueError, match=r"manifest.json: the bank was trained with vocab_size=1683.*10000"):
        TrajectoryBank(path, vocab_size=10_000)
    with pytest.raises(ValueError, match=r"fingerprint .* the current data's is deadbeef"):
        TrajectoryBank(path, fingerprint="deadbeef")
    with pytest.raises(ValueError, match="do not fit the learner"):
        TrajectoryBank(path).check_compatible(SASRec(1683, d_model=32, n_layers=1))
    with pytest.raises(FileNotFoundError, match="not a trajectory bank"):
        TrajectoryBank(tmp_path)
    (tmp_path / "manifest.json").write_text('{"entries": [\n oops')
    with pytest.raises(ValueError, match=r"manifest.json:2: invalid JSON"):
        TrajectoryBank(tmp_path)


class Crash(Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 5:
            raise RuntimeError("power cut")


def test_an_interrupted_run_never_damages_the_bank(tmp_path, data_dir):
    with working_in(tmp_path, data_dir):
        run("fit", "--trainer.max_steps=8", "--trainer.limit_train_batches=8", config=PRETRAIN)
        bank = tmp_path / "runs" / "tiny" / "banks" / "ml100k_sasrec"
        before = (bank / "manifest.json").read_text()
        files = sorted(p.name for p in (bank / "seed-0").iterdir())
        cli = build(["--config", str(PRETRAIN), "--config", str(TINY), "--trainer.max_steps=8",
                     "--trainer.limit_train_batches=8"], run=False)
        cli.trainer.callbacks.append(Crash())
        with pytest.raises(RuntimeError, match="power cut"):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        assert (bank / "manifest.json").read_text() == before  # the complete run is untouched
        assert sorted(p.name for p in (bank / "seed-0").iterdir()) == files
        staged = json.loads((bank / "seed-0.partial" / "entries.json").read_text())
        assert staged["complete"] is False and all(e["max_step"] is None for e in staged["entries"])
        assert len(TrajectoryBank(bank)) == len(json.loads(before)["entries"])
        with pytest.warns(UserWarning, match="discarding .*seed-0.partial, left by an interrupted run"):
            run("fit", "--trainer.max_steps=6", "--trainer.limit_train_batches=6", config=PRETRAIN)
    manifest = json.loads((bank / "manifest.json").read_text())
    assert {e["max_step"] for e in manifest["entries"]} == {6}  # replaced by a complete run only
    assert not (bank / "seed-0.partial").exists() and not (bank / "seed-0.old").exists()
    assert all((bank / e["file"]).is_file() for e in manifest["entries"])


def hand_made_bank(root, entries):
    learner = SASRec(5, d_model=8, n_layers=1, max_len=4)
    for e in entries:
        (root / e["file"]).parent.mkdir(parents=True, exist_ok=True)
        torch.save(learner.state_dict(), root / e["file"])
    (root / "manifest.json").write_text(json.dumps({"vocab_size": 5, "learner": learner.config(),
                                                    "entries": entries}))


def test_incomplete_runs_narrow_windows_and_truncated_files_are_reported(tmp_path):
    done = [{"run": "a", "step": s, "max_step": 100, "file": f"a/step-{s}.pt", "metrics": {}} for s in (0, 50, 100)]
    legacy = [{"run": "b", "step": s, "max_step": None, "file": f"b/step-{s}.pt", "metrics": {}} for s in (0, 10)]
    hand_made_bank(tmp_path, done + legacy)
    with pytest.warns(UserWarning, match=r"run\(s\) b never completed .* left out"):
        bank = TrajectoryBank(tmp_path)
    assert {e["run"] for e in bank.entries} == {"a"}
    hand_made_bank(tmp_path, done + [dict(done[1], step=s, file=f"a/step-{s}.pt") for s in (60, 70, 80)])
    with pytest.warns(UserWarning, match=r"selects 0 trained checkpoint\(s\) of 6 \(plus 1 initialisations\)"):
        TrajectoryBank(tmp_path, max_fraction=0.3)
    data = (tmp_path / "a" / "step-50.pt").read_bytes()
    (tmp_path / "a" / "step-50.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"step-50.pt: missing or truncated bank checkpoint"):
        TrajectoryBank(tmp_path)
