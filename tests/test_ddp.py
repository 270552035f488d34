"""Distillation across processes (2 CPU processes, gloo): one summary on every rank, equal to a single-process
run that draws the same start points, and downstream jobs shared out and gathered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, SingleDeviceStrategy
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from farzi_lightning.cli import build
from farzi_lightning.distributed import check_precision, check_strategy

from cli_utils import ROOT, SHORT_DOWNSTREAM, TINY

DISTIL = ROOT / "configs" / "ml100k.yaml"
STEPS = 3


def farzi(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "farzi_lightning.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def distil(root: Path, env: dict, *extra: str) -> tuple[Path, str]:
    """A 3-step distillation with both callbacks on; returns its log dir and its log output."""
    root.mkdir()
    done = farzi(["fit", "--config", str(DISTIL), "--config", str(TINY), f"--trainer.max_steps={STEPS}",
           "--tiny=false", "--model.init_args.inner_optimizer.init_args.steps=5", *SHORT_DOWNSTREAM,
           "--model.init_args.summary.init_args.num_sequences=10", "--model.init_args.start.init_args.max_steps=10",
           "--model.init_args.downstream.init_args.seeds=2",  # two jobs: one for each rank
           f"--trainer.default_root_dir={root}", "--trainer.callbacks+=rank_probe.RankProbe", *extra],
          root, {**env, "FARZI_PROBE_DIR": str(root)})
    return root / "lightning_logs" / "version_0", done.stdout + done.stderr


def scalars(log_dir: Path, prefix: str) -> dict[tuple[str, int], float]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {(tag, e.step): e.value for tag in events.Tags()["scalars"] if tag.startswith(prefix)
            for e in events.Scalars(tag)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, module_data_dir):
    root = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "FARZI_DATA_DIR": str(module_data_dir), "PYTHONPATH": str(ROOT / "tests"),
           "OMP_NUM_THREADS": "1"}
    farzi(["fit", "--config", str(ROOT / "configs/ml100k_pretrain.yaml"), "--config", str(TINY)], root, env)
    ddp = distil(root / "ddp", env, "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
                 f"--model.init_args.teacher={root}/runs/tiny/banks/ml100k_sasrec")
    single = distil(root / "single", env, "--model.init_args.meta_batch_size=2",
                    f"--model.init_args.teacher={root}/runs/tiny/banks/ml100k_sasrec")
    return root, ddp, single


def test_downstream_jobs_are_shared_out(runs):
    (_, ddp_log), (_, single_log) = runs[1], runs[2]
    # Progress lines come from rank zero only: under DDP it ran seed 0 and rank 1 ran seed 1.
    assert "sasrec/summary seed 0" in ddp_log and "sasrec/summary seed 1" not in ddp_log
    assert "sasrec/summary seed 0" in single_log and "sasrec/summary seed 1" in single_log


def test_ranks_agree_and_equal_one_process_drawing_both(runs):
    root = runs[0]
    for step in range(1, STEPS + 1):
        r0, r1 = (torch.load(root / "ddp" / f"rank{r}-step{step}.pt") for r in (0, 1))
        one = torch.load(root / "single" / f"rank0-step{step}.pt")
        for a, b, c in zip(r0["summary"], r1["summary"], one["summary"]):
            assert torch.equal(a, b)  # bit-identical on both ranks after every step
            torch.testing.assert_close(a, c, rtol=0, atol=1e-6)  # = the mean of the same two draws in one process
        for a, b, c in zip(r0["grad"], r1["grad"], one["grad"]):
            assert torch.equal(a, b)
            torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-7)


def test_files_and_downstream_metrics_equal_a_single_process_run(runs):
    (ddp, _), (single, _) = runs[1], runs[2]
    a = torch.load(ddp / "checkpoints" / "summary.pt", weights_only=True)
    b = torch.load(single / "checkpoints" / "summary.pt", weights_only=True)
    assert torch.equal(a["tokens"], b["tokens"]) and a["init_args"] == b["init_args"]
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=1e-6)
    shared, alone = scalars(ddp, "downstream/"), scalars(single, "downstream/")
    assert {step for _, step in shared} == {0, STEPS} and shared.keys() == alone.keys()
    for key, value in alone.items():
        assert shared[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert not list(ddp.parent.glob("version_1"))  # one run directory: rank 1 wrote no logs of its own


def test_farzi_test_on_two_processes_equals_one(runs, data_dir):
    """farzi test shares its jobs out too: two processes report what one does, and neither waits for ever."""
    root, (ddp, _), _ = runs
    env = {**os.environ, "FARZI_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT / "tests"), "OMP_NUM_THREADS": "1"}
    common = ["test", "--config", str(DISTIL), "--config", str(TINY), *SHORT_DOWNSTREAM,
              "--model.init_args.downstream.init_args.seeds=2", "--model.init_args.summary.init_args.num_sequences=10",
              f"--model.init_args.teacher={root}/runs/tiny/banks/ml100k_sasrec",
              f"--ckpt_path={ddp / 'checkpoints' / 'last.ckpt'}"]
    results = {}
    for name, extra in (("test2", ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]),
                        ("test1", [])):
        (root / name).mkdir()
        farzi([*common, f"--trainer.default_root_dir={root / name}", *extra], root / name, env)
        results[name] = scalars(root / name / "lightning_logs" / "version_0", "downstream/")
    assert results["test2"].keys() == results["test1"].keys() and len(results["test1"]) >= 8
    for key, value in results["test1"].items():
        assert results["test2"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed", "deepspeed_stage_3",
                                      "lightning.pytorch.strategies.FSDPStrategy"])
def test_sharding_strategies_are_refused_before_training(strategy, capsys):
    with pytest.raises(SystemExit):
        build(["fit", "--config", str(DISTIL), "--config", str(TINY), f"--trainer.strategy={strategy}"])
    err = capsys.readouterr().err
    assert "cannot run a distillation" in err and "Supported: auto, single_device, ddp, ddp_spawn" in err
    assert "Traceback" not in err


def test_precisions_that_break_the_meta_gradient_are_refused(capsys):
    with pytest.raises(SystemExit):
        build(["fit", "--config", str(DISTIL), "--config", str(TINY), "--trainer.precision=16-mixed"])
    assert "unscale meta-gradients that were never scaled" in capsys.readouterr().err
    check_precision("32-true")
    check_precision("64-true")
    with pytest.raises(ValueError, match="exact reversal"):
        check_precision("bf16-true")


def test_strategy_check_accepts_data_parallel_and_refuses_sharding():
    for ok in ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_false", DDPStrategy(),
               SingleDeviceStrategy("cpu"), {"class_path": "lightning.pytorch.strategies.DDPStrategy"}):
        check_strategy(ok)
    for bad in (FSDPStrategy, DeepSpeedStrategy, "xla"):
        with pytest.raises(ValueError, match="Supported: auto"):
            check_strategy(bad)
