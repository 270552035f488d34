"""Runs own their folders: two runs started at once never share a run folder or a bank's run, a folder or bank run
in use is refused at once with one line, a resumed pretrain never rewrites its bank, and checkpoints are written
atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from filelock import FileLock
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from farzi_lightning.checkpoints import AtomicCheckpointIO
from farzi_lightning.cli import build, main
from farzi_lightning.runs import claim_version, release

from cli_utils import ROOT, TINY, run, working_in

PRETRAIN = ROOT / "configs" / "ml100k_pretrain.yaml"


def test_two_loggers_that_picked_the_same_version_get_two_folders(tmp_path, monkeypatch):
    first, second = TensorBoardLogger(tmp_path), TensorBoardLogger(tmp_path)
    a = claim_version(first)
    monkeypatch.setattr(second, "_get_next_version", lambda: 0)  # it listed the folder before the first wrote to it
    b = claim_version(second)
    assert a.name == "version_0" and b.name == "version_1" and second.version == 1
    for folder in (a, b):
        release(folder / "run.lock")


def test_concurrent_pretrains_into_one_root_and_one_bank(tmp_path, data_dir):
    """Two seeds started at once: two run folders, one bank holding both complete runs."""
    env = {**os.environ, "FARZI_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "farzi_lightning.cli", "fit", "--config", str(PRETRAIN), "--config", str(TINY),
            "--trainer.max_steps=4", "--trainer.limit_train_batches=4"]
    procs = [subprocess.Popen([*argv, f"--seed_everything={seed}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for seed in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    folders = sorted(tmp_path.glob("runs/tiny/ml100k_pretrain/lightning_logs/version_*"))
    assert [f.name for f in folders] == ["version_0", "version_1"]
    assert all((f / "checkpoints" / "last.ckpt").is_file() for f in folders)
    manifest = json.loads((tmp_path / "runs/tiny/banks/ml100k_sasrec/manifest.json").read_text())
    assert {e["run"] for e in manifest["entries"]} == {"seed-0", "seed-1"}
    assert all(e["max_step"] == 4 for e in manifest["entries"])


def test_a_bank_run_or_run_folder_in_use_is_refused_at_once(tmp_path, data_dir, capsys):
    with working_in(tmp_path, data_dir):
        bank = tmp_path / "runs" / "tiny" / "banks" / "ml100k_sasrec"
        bank.mkdir(parents=True)
        other = FileLock(str(bank / "seed-0.lock"), timeout=0)  # another process writing seed-0 (its own lock)
        other.acquire()
        try:
            with pytest.raises(SystemExit):
                main(["fit", "--config", str(PRETRAIN), "--config", str(TINY), "--trainer.max_steps=2"])
        finally:
            other.release()
        assert "the bank's run 'seed-0' is in use by another running process" in capsys.readouterr().err
        run("fit", "--trainer.max_steps=2", config=PRETRAIN)  # free again: the run goes through
        folder = next(tmp_path.glob("runs/tiny/ml100k_pretrain/lightning_logs/version_*/checkpoints/last.ckpt"))
        folder = folder.parent.parent
        other = FileLock(str(folder / "run.lock"), timeout=0)  # the run released its folder when it ended
        other.acquire()
        try:
            with pytest.raises(SystemExit):
                main(["fit", "--config", str(PRETRAIN), "--config", str(TINY), "--trainer.max_steps=4",
                      "--ckpt_path=last"])
        finally:
            other.release()
        assert f"{folder.relative_to(tmp_path)}: this run folder is in use by another running process" in \
            capsys.readouterr().err


class CrashAfterCheckpoint(Callback):
    """Saves last.ckpt at step 4 (as the run's checkpoint callback would), then dies at step 6."""

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 4:
            trainer.save_checkpoint(trainer.checkpoint_callback.dirpath + "/last.ckpt")
        if trainer.global_step == 6:
            raise RuntimeError("power cut")


def test_a_resumed_pretrain_continues_its_bank_without_rewriting_it(tmp_path, data_dir):
    args = ["--config", str(PRETRAIN), "--config", str(TINY), "--trainer.max_steps=8",
            "--trainer.limit_train_batches=8", "--trainer.max_epochs=1"]
    with working_in(tmp_path, data_dir):
        cli = build(args, run=False)
        cli.trainer.callbacks.append(CrashAfterCheckpoint())
        with pytest.raises(RuntimeError, match="power cut"):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        bank = tmp_path / "runs" / "tiny" / "banks" / "ml100k_sasrec"
        init = (bank / "seed-0.partial" / "step-0000000.pt").read_bytes()
        resumed = run("fit", *args[4:], "--ckpt_path=last", config=PRETRAIN)
    assert resumed.trainer.global_step == 8  # max_steps honoured
    manifest = json.loads((bank / "manifest.json").read_text())
    steps = [e["step"] for e in manifest["entries"]]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 8  # unique, increasing, complete
    assert (bank / "seed-0" / "step-0000000.pt").read_bytes() == init  # the initialisation, not trained weights


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    """A failure while writing (a full disk) leaves the previous checkpoint under the final name, whole."""
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": 2, "big": list(range(1000))}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_cli_writes_checkpoints_atomically(tmp_path, data_dir):
    with working_in(tmp_path, data_dir):
        cli = build(["--config", str(PRETRAIN), "--config", str(TINY)], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def bank_tensors(bank):
    manifest = json.loads((bank / "manifest.json").read_text())
    return manifest, {e["file"]: torch.load(bank / e["file"], weights_only=True) for e in manifest["entries"]}


def test_kill_9_and_resume_continues_the_bank_exactly(tmp_path, data_dir):
    """A pretrain killed with SIGKILL mid-epoch, between two bank steps, and resumed with --ckpt_path last writes
    the very bank an uninterrupted run of the same seed writes: same steps, same weights at each, file by file."""
    env = {**os.environ, "FARZI_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    argv = [sys.executable, "-m", "farzi_lightning.cli", "fit", "--config", str(PRETRAIN), "--config", str(TINY),
            "--trainer.max_steps=24", "--trainer.limit_train_batches=10", "--trainer.max_epochs=3"]
    (tmp_path / "whole").mkdir()
    (tmp_path / "killed").mkdir()
    subprocess.run(argv, cwd=tmp_path / "whole", env=env, check=True, capture_output=True)
    killed = subprocess.run([*argv, "--trainer.callbacks+=killer.KillAt", "--trainer.callbacks.step=13"],
                            cwd=tmp_path / "killed", env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    bank = "runs/tiny/banks/ml100k_sasrec"
    assert not (tmp_path / "killed" / bank / "manifest.json").exists()  # nothing published by the killed run
    resumed = subprocess.run([*argv, "--ckpt_path=last"], cwd=tmp_path / "killed", env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole, whole_files = bank_tensors(tmp_path / "whole" / bank)
    again, again_files = bank_tensors(tmp_path / "killed" / bank)
    steps = [e["step"] for e in again["entries"]]
    assert steps == [e["step"] for e in whole["entries"]] == sorted(set(steps)) and steps[-1] == 24
    assert {e["max_step"] for e in again["entries"]} == {24}
    assert whole_files.keys() == again_files.keys()
    for name, state in whole_files.items():
        assert all(torch.equal(state[k], again_files[name][k]) for k in state), name
