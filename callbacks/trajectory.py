"""``TrajectoryCheckpoint``: save the learner's parameters every N steps into a trajectory bank."""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from farzi_lightning.trajectories import MANIFEST, atomic_write, read_manifest, write_manifest


class TrajectoryCheckpoint(Callback):
    """Writes ``pl_module.learner``'s state_dict at evenly spaced optimiser steps into a bank.

    One fit adds one run (named ``run_name``, default ``seed-<seed>``); run the same config with other seeds
    to add independent runs. The manifest records each checkpoint's step, the latest validation metrics,
    the data fingerprint and vocabulary size, and the learner's config; files are written atomically.

    Args:
        dirpath: bank directory; None: ``<log dir>/trajectories``.
        checkpoints: how many checkpoints to spread evenly over the run (from the trainer's step budget).
        every_n_steps: save every this many optimiser steps instead (overrides ``checkpoints``).
        save_init: also save the parameters before the first step (step 0).
        run_name: name of this run in the bank; None: ``seed-<PL_GLOBAL_SEED>``.
    """

    def __init__(self, dirpath: str | None = None, checkpoints: int = 20, every_n_steps: int | None = None,
                 save_init: bool = True, run_name: str | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if checkpoints < 1:
            raise ValueError(f"checkpoints must be >= 1, got {checkpoints}")
        self.dirpath, self.checkpoints, self.every_n_steps = dirpath, checkpoints, every_n_steps
        self.save_init, self.run_name = save_init, run_name
        self._last_saved = -1

    def root(self, trainer: Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir) / "trajectories"

    def run(self) -> str:
        return self.run_name or f"seed-{os.environ.get('PL_GLOBAL_SEED', 'none')}"

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not hasattr(pl_module, "learner"):
            raise AttributeError("TrajectoryCheckpoint needs a module with a `learner` attribute (LearnerModule)")
        self._every = self.every_n_steps or max(1, int(trainer.estimated_stepping_batches) // self.checkpoints)
        self._open(trainer, pl_module)

    @rank_zero_only
    def _open(self, trainer: Trainer, pl_module: LightningModule) -> None:
        data = trainer.datamodule
        learner = pl_module.learner
        manifest = {"fingerprint": getattr(data, "fingerprint", None), "vocab_size": getattr(data, "vocab_size", None),
                    "learner": learner.config() if hasattr(learner, "config") else None, "entries": []}
        root = self.root(trainer)
        if (root / MANIFEST).is_file():
            old = read_manifest(root)
            for key in ("fingerprint", "vocab_size", "learner"):
                if old.get(key) != manifest[key]:
                    raise ValueError(f"{root / MANIFEST}: the bank holds runs with {key}={old.get(key)!r}, this run "
                                     f"has {manifest[key]!r}; use another dirpath")
            manifest["entries"] = [e for e in old["entries"] if e["run"] != self.run()]
            if len(manifest["entries"]) != len(old["entries"]):
                rank_zero_warn(f"TrajectoryCheckpoint: replacing run {self.run()!r} in {root}")
        self._manifest = manifest
        if self.save_init and trainer.global_step == 0:
            self._save(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        if trainer.global_step % self._every == 0:
            self._save(trainer, pl_module)

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Validation that runs right after a save describes those very weights: attach its metrics.
        entries = getattr(self, "_manifest", {}).get("entries", [])
        if not trainer.sanity_checking and entries and entries[-1]["step"] == trainer.global_step:
            entries[-1]["metrics"] = self._metrics(trainer)
            write_manifest(self.root(trainer), self._manifest)

    @staticmethod
    def _metrics(trainer: Trainer) -> dict[str, float]:
        return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer, pl_module)
        self._finish(trainer)

    @rank_zero_only
    def _finish(self, trainer: Trainer) -> None:
        for entry in self._manifest["entries"]:
            if entry["run"] == self.run():
                entry["max_step"] = trainer.global_step
        write_manifest(self.root(trainer), self._manifest)

    @rank_zero_only
    def _save(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_saved:
            return
        self._last_saved = step
        rel = f"{self.run()}/step-{step:07d}.pt"
        state = {k: v.detach().cpu().clone() for k, v in pl_module.learner.state_dict().items()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self.root(trainer) / rel, lambda f: f.write(buffer.getvalue()))
        self._manifest["entries"].append({"run": self.run(), "step": step, "max_step": None, "file": rel,
                                          "metrics": self._metrics(trainer)})
        write_manifest(self.root(trainer), self._manifest)
