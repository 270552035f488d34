"""Seconds per outer step and peak memory of a distillation config on one device.

Runs ``--steps`` outer steps of ``--config`` (default ``configs/ml100k.yaml``) with the monitoring callbacks
and checkpoints taken off, timing each step (synchronised on GPU); the first step (warm-up, lazy
initialisation) is reported apart. Memory is ``torch.cuda.max_memory_allocated`` on GPU and the process's
peak RSS on CPU. Writes ``benchmarks/results/outer_steps_<device>.json`` and prints a Markdown row.

    python benchmarks/outer_steps.py --device cpu --steps 10
    python benchmarks/outer_steps.py --device cuda --steps 10

Needs the config's teacher bank (``farzi fit --config configs/ml100k_pretrain.yaml`` first) and
``FARZI_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from farzi_lightning.callbacks import DownstreamEvaluation, SummaryMonitor
from farzi_lightning.cli import build

ROOT = Path(__file__).resolve().parents[1]


class StepTimer(Callback):
    """Wall time of every training step, synchronised on CUDA."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def _sync(self, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self._start)


def time_steps(config_args: list[str], steps: int, device: str = "cpu") -> dict:
    """Run ``steps`` outer steps of the config (``--config ...`` and overrides) with the monitoring callbacks and
    checkpoints off; the per-step seconds, the first one apart, and peak memory."""
    cli = build([*config_args, f"--trainer.max_steps={steps}",
                 f"--trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", "--trainer.devices=1",
                 "--trainer.logger=false", f"--trainer.default_root_dir={tempfile.mkdtemp()}",
                 "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"], run=False)
    timer = StepTimer()
    trainer = cli.trainer
    off = (DownstreamEvaluation, SummaryMonitor, ModelCheckpoint)
    trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, off)]
    trainer.callbacks.append(timer)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(cli.model, datamodule=cli.datamodule)
    if device == "cuda":
        memory_mib = torch.cuda.max_memory_allocated() / 2**20
        name = torch.cuda.get_device_name()
    else:
        memory_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    steady = timer.seconds[1:] or timer.seconds
    return {"device": device, "device_name": name, "torch": torch.__version__, "steps": steps,
            "first_step_s": timer.seconds[0], "median_s": statistics.median(steady),
            "mean_s": statistics.fmean(steady), "peak_memory_mib": memory_mib, "seconds": timer.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "ml100k.yaml"))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=None, help="JSON (default benchmarks/results/outer_steps_<device>.json)")
    args = parser.parse_args()
    record = {"config": Path(args.config).name, **time_steps(["--config", args.config], args.steps, args.device)}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"outer_steps_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print("| config | device | first step (s) | median s/step | peak memory (MiB) |")
    print("|---|---|---|---|---|")
    print(f"| {record['config']} | {args.device} ({record['device_name']}) | {record['first_step_s']:.2f} | "
          f"{record['median_s']:.3f} | {record['peak_memory_mib']:,.0f} |")


if __name__ == "__main__":
    main()
