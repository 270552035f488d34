"""Distillation under DDP on CPU (2 processes, gloo): meta-gradients are averaged, summaries stay identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cli_utils import ROOT, SHORT_DOWNSTREAM, TINY

DISTIL = ROOT / "configs" / "ml100k.yaml"


def test_two_ranks_keep_identical_summaries(tmp_path, data_dir):
    env = {**os.environ, "FARZI_DATA_DIR": str(data_dir), "FARZI_PROBE_DIR": str(tmp_path),
           "PYTHONPATH": str(ROOT / "tests"), "OMP_NUM_THREADS": "1"}
    farzi = [sys.executable, "-m", "farzi_lightning.cli", "fit"]
    pretrain = subprocess.run(farzi + ["--config", str(ROOT / "configs/ml100k_pretrain.yaml"), "--config", str(TINY)],
                              cwd=tmp_path, env=env, capture_output=True, text=True)
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    distil = subprocess.run(farzi + ["--config", str(DISTIL), "--config", str(TINY), "--trainer.max_steps=2",
                                     "--model.init_args.inner_optimizer.init_args.steps=5", *SHORT_DOWNSTREAM,
                                     "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
                                     "--trainer.callbacks+=rank_probe.RankProbe"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert distil.returncode == 0, distil.stderr[-3000:]
    ranks = [[json.loads(line) for line in open(tmp_path / f"rank{r}.jsonl")] for r in (0, 1)]
    assert [r["step"] for r in ranks[0]] == [r["step"] for r in ranks[1]] == [1, 2]
    for a, b in zip(*ranks):
        assert a["summary"] == b["summary"]  # identical after every step: the update was the same everywhere
        assert a["grad"] == b["grad"]  # the averaged meta-gradient
