"""``TrajectoryCheckpoint``: save the learner's parameters every N steps into a trajectory bank."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from filelock import FileLock
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from farzi_lightning.files import atomic_save, atomic_write
from farzi_lightning.manifest import MANIFEST, read_manifest, write_manifest
from farzi_lightning.runs import hold, release
from farzi_lightning.seeds import SEED_VAR


class TrajectoryCheckpoint(Callback):
    """Writes ``pl_module.learner``'s state_dict at evenly spaced optimiser steps into a bank.

    One fit adds one run (named ``run_name``, default ``seed-<seed>``); run the same config with other seeds
    to add independent runs. The manifest records each checkpoint's step, the latest validation metrics,
    the data fingerprint and vocabulary size, and the learner's config; files are written atomically.

    A run is published only when it completes: its checkpoints go to ``<bank>/<run>.partial/`` (with
    ``entries.json``, every entry's ``max_step`` null: incomplete) and replace the bank's ``<run>/`` and its
    manifest entries at the end of fit. An interrupted run therefore never damages the bank; resumed with
    ``--ckpt_path``, it carries on in its staging folder (the callback's state is in the checkpoint).

    Args:
        dirpath: bank directory; None: ``<log dir>/trajectories``.
        checkpoints: how many checkpoints to spread evenly over the run (from the trainer's step budget).
        every_n_steps: save every this many optimiser steps instead (overrides ``checkpoints``).
        save_init: also save the parameters before the first step (step 0).
        run_name: name of this run in the bank; None: ``seed-<PL_GLOBAL_SEED>``.
        save_last: also write the run's ``last.ckpt`` (of each ``ModelCheckpoint`` with ``save_last``) at every
            bank checkpoint, so a run killed at any point resumes from its latest bank step with ``--ckpt_path
            last`` and continues the bank exactly (the training loader resumes mid-epoch).
    """

    def __init__(self, dirpath: str | None = None, checkpoints: int = 20, every_n_steps: int | None = None,
                 save_init: bool = True, run_name: str | None = None, save_last: bool = True) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"TrajectoryCheckpoint every_n_steps must be >= 1, got {every_n_steps}")
        if checkpoints < 1:
            raise ValueError(f"TrajectoryCheckpoint checkpoints must be >= 1, got {checkpoints}")
        self.dirpath, self.checkpoints, self.every_n_steps = dirpath, checkpoints, every_n_steps
        self.save_init, self.run_name, self.save_last = save_init, run_name, save_last
        self._saved_step = -1
        self._entries: list[dict] = []  # this run's checkpoints so far (staged)
        self._resumed = False

    def state_dict(self) -> dict:
        return {"entries": self._entries}

    def load_state_dict(self, state_dict: dict) -> None:
        self._entries, self._resumed = list(state_dict.get("entries", [])), True

    def root(self, trainer: Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir) / "trajectories"

    def run(self) -> str:
        return self.run_name or f"seed-{os.environ.get(SEED_VAR, 'none')}"

    def staging(self, trainer: Trainer) -> Path:
        return self.root(trainer) / f"{self.run()}.partial"

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not hasattr(pl_module, "learner"):
            raise AttributeError("TrajectoryCheckpoint needs a module with a `learner` attribute (LearnerModule)")
        self._open(trainer, pl_module)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Not in on_fit_start: estimating the steps builds the training loader, which must happen after a resumed
        # run's loop state (its position in the epoch, ``ResumableLoader``) is restored.
        self._every = self.every_n_steps or max(1, int(trainer.estimated_stepping_batches) // self.checkpoints)

    @rank_zero_only
    def _open(self, trainer: Trainer, pl_module: LightningModule) -> None:
        data = trainer.datamodule
        learner = pl_module.learner
        self._header = {"fingerprint": getattr(data, "fingerprint", None),
                        "vocab_size": getattr(data, "vocab_size", None),
                        "learner": learner.config() if hasattr(learner, "config") else None}
        root = self.root(trainer)
        hold(root / f"{self.run()}.lock", f"the bank's run {self.run()!r}")  # one writer per run of a bank
        if (root / MANIFEST).is_file():
            old = read_manifest(root)
            for key, value in self._header.items():
                if old.get(key) != value:
                    raise ValueError(f"{root / MANIFEST}: the bank holds runs with {key}={old.get(key)!r}, this run "
                                     f"has {value!r}; use another dirpath")
        staging = self.staging(trainer)
        if not self._resumed:
            if staging.exists():
                rank_zero_warn(f"TrajectoryCheckpoint: discarding {staging}, left by an interrupted run")
                shutil.rmtree(staging)
            self._entries = []
        if self.save_init and trainer.global_step == 0 and not self._resumed:  # a resumed run's weights are trained
            self._save(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        if trainer.global_step % self._every == 0 and self._saved_step != trainer.global_step:
            self._saved_step = trainer.global_step
            self._save(trainer, pl_module)
            if self.save_last:
                self._save_last(trainer)

    @staticmethod
    def _save_last(trainer: Trainer) -> None:
        """``last.ckpt`` of every ``ModelCheckpoint(save_last=...)``, now: a run killed later resumes from this
        bank step (with ``monitor``, Lightning writes it only at validation)."""
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "save_last", False) and callback.dirpath:
                name = f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
                trainer.save_checkpoint(os.path.join(callback.dirpath, name))

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Validation that runs right after a save describes those very weights: attach its metrics.
        if not trainer.sanity_checking and self._entries and self._entries[-1]["step"] == trainer.global_step:
            self._entries[-1]["metrics"] = self._metrics(trainer)
            self._write_staged(trainer)

    @staticmethod
    def _metrics(trainer: Trainer) -> dict[str, float]:
        return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer, pl_module)
        self._publish(trainer)

    @rank_zero_only
    def _publish(self, trainer: Trainer) -> None:
        """The run is complete: its folder and entries replace the bank's (old run folder removed last)."""
        root, run = self.root(trainer), self.run()
        staging, final, old = self.staging(trainer), root / run, root / f"{run}.old"
        if not staging.exists():  # a resumed run that had already been published: nothing new to add
            rank_zero_warn(f"TrajectoryCheckpoint: run {run!r} of {root} was already complete; the bank is unchanged")
            release(root / f"{run}.lock")
            return
        entries = [dict(e, max_step=trainer.global_step, file=f"{run}/{Path(e['file']).name}") for e in self._entries]
        with FileLock(str(root / "manifest.lock"), timeout=600):  # runs of other seeds may publish at the same time
            self._publish_locked(trainer, root, run, staging, final, old, entries)
        release(root / f"{run}.lock")

    def _publish_locked(self, trainer: Trainer, root: Path, run: str, staging: Path, final: Path, old: Path,
                        entries: list[dict]) -> None:
        manifest = dict(self._header, entries=[])
        if (root / MANIFEST).is_file():
            manifest["entries"] = [e for e in read_manifest(root)["entries"] if e["run"] != run]
            if len(manifest["entries"]) != len(read_manifest(root)["entries"]):
                rank_zero_warn(f"TrajectoryCheckpoint: replacing run {run!r} in {root} with a complete run")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        (staging / "entries.json").unlink(missing_ok=True)
        staging.rename(final)
        manifest["entries"] += entries
        write_manifest(root, manifest)
        shutil.rmtree(old, ignore_errors=True)

    def _write_staged(self, trainer: Trainer) -> None:
        text = json.dumps(dict(self._header, complete=False, entries=self._entries), indent=1)
        atomic_write(self.staging(trainer) / "entries.json", lambda f: f.write(text.encode()))

    @rank_zero_only
    def _save(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = trainer.global_step
        if self._entries and self._entries[-1]["step"] == step:
            return
        name = f"step-{step:07d}.pt"
        state = {k: v.detach().cpu().clone() for k, v in pl_module.learner.state_dict().items()}
        atomic_save(state, self.staging(trainer) / name)
        self._entries.append({"run": self.run(), "step": step, "max_step": None, "file": f"{self.run()}/{name}",
                              "metrics": self._metrics(trainer)})
        self._write_staged(trainer)
