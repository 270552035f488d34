"""Checkpoints a person hands the CLI: found (``--ckpt_path last``), verified, and of the right kind.

- ``read_checkpoint(path)`` loads with ``weights_only=True`` and turns a truncated or foreign file into one
  ``ValueError`` naming it;
  its stored configs' ``class_path``/``_instantiator`` pass the trust boundary (``farzi_lightning.trust``: an
  exact class of the expected kind) before anything is imported;
- ``find_last(root)`` is the newest ``last.ckpt`` of the runs under ``root``.
"""

from __future__ import annotations

import inspect
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from .files import atomic_save
from .trust import check_config


def read_checkpoint(path: str | Path, key: str = "--ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents (tensors and plain types only); a bad file raises naming ``key`` and path."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("**/*.ckpt"))[:2]
        hint = f" such as {found[0]}" if found else ""
        raise IsADirectoryError(f"{key}: {path} is a folder; name a checkpoint file in it{hint}, or use "
                                "--ckpt_path last for the newest last.ckpt under the run's root")
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {path} not found")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{key}: {path} is not a complete checkpoint (truncated, or not written by torch.save)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"{key}: {path} is damaged (member {bad} fails its checksum)")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{key}: {path} is not a readable checkpoint ({str(err).splitlines()[0]})") from None
    except Exception as err:  # noqa: BLE001 -- the weights-only unpickler refuses foreign objects
        raise ValueError(f"{key}: {path} holds objects other than tensors and plain values; it was not written "
                         f"by this package ({type(err).__name__})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{key}: {path} is not a Lightning checkpoint (a {type(checkpoint).__name__})")
    if "pytorch-lightning_version" not in checkpoint or "state_dict" not in checkpoint:
        if "tokens" in checkpoint and "class" in checkpoint:
            what = "a summary.pt (retrain on it with farzi_lightning.load_summary; resume from the run's .ckpt)"
        elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            what = "a learner's weights (a trajectory bank's step file; a bank is read as model.init_args.teacher)"
        else:
            what = f"not a Lightning checkpoint (keys {sorted(map(str, checkpoint))[:5]})"
        raise ValueError(f"{key}: {path} is {what}; a Lightning checkpoint ends in .ckpt, e.g. "
                         "<run>/checkpoints/last.ckpt")
    for part in ("hyper_parameters", "datamodule_hyper_parameters"):
        check_config(checkpoint.get(part) or {}, f"{key}: {path}")
    return checkpoint


def checkpoint_class(checkpoint: dict[str, Any]) -> str | None:
    """The import path of the module class that wrote the checkpoint (as the CLI records it), if known."""
    return checkpoint.get("hyper_parameters", {}).get("_class_path")


def find_last(root: str | Path) -> Path | None:
    """The most recently written ``last.ckpt`` under ``root`` (any run folder), or None."""
    found = [p for p in Path(root).glob("**/last.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


class VerifiedLoad:
    """Mixin for LightningModules: ``load_from_checkpoint`` verifies the file first (``read_checkpoint``), so a
    damaged file is named and a checkpoint naming foreign classes is refused before Lightning imports them; a
    checkpoint records its data's fingerprint, and one restored by a Trainer onto other data (another data set or
    preprocessing, even with the same vocabulary size) is refused unless ``allow_other_data`` (the CLI's
    ``--other_data true``) says it is intended."""

    #: Whether a checkpoint of other data may be restored (``farzi ... --other_data true``).
    allow_other_data: bool = False

    def _data_fingerprint(self) -> str | None:
        trainer = getattr(self, "_trainer", None)
        return getattr(getattr(trainer, "datamodule", None), "fingerprint", None)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        fingerprint = self._data_fingerprint()
        if fingerprint is not None:
            checkpoint["data_fingerprint"] = fingerprint

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored, current = checkpoint.get("data_fingerprint"), self._data_fingerprint()
        if stored and current and stored != current and not self.allow_other_data:
            raise ValueError(f"--ckpt_path: the checkpoint was trained on data with fingerprint {stored}, but the "
                             f"configured data's is {current} (another data set or preprocessing); pass "
                             "--other_data true if that is intended")
        mine = self.state_dict()
        differ = [(k, tuple(v.shape), tuple(mine[k].shape)) for k, v in checkpoint.get("state_dict", {}).items()
                  if k in mine and hasattr(v, "shape") and tuple(v.shape) != tuple(mine[k].shape)]
        if differ:
            name, theirs, ours = differ[0]
            raise ValueError(f"--ckpt_path: the checkpoint's {name} has shape {theirs}, the configured model's "
                             f"{ours} ({len(differ)} tensor(s) differ): the config describes another model than the "
                             "run that wrote the checkpoint (e.g. another summary size or learner width); use the "
                             "run's own config (<run>/config.yaml)")

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        if isinstance(checkpoint_path, (str, Path)):
            read_checkpoint(checkpoint_path, key="checkpoint_path")
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)


def save_config(module) -> None:
    """``save_hyperparameters`` for modules built from parts: under the CLI every argument is recorded as its
    config (``{"class_path", "init_args"}``), so the checkpoint rebuilds the module from the file alone
    (``load_from_checkpoint``) and TensorBoard's HPARAMS shows every setting that shaped the run. Built in
    Python, parts that record their arguments (``config()``) are stored as such; others are left out."""
    frame = inspect.currentframe().f_back
    module.save_hyperparameters(frame=frame)
    for key, value in list(module.hparams.items()):
        if isinstance(value, (str, int, float, bool, type(None), dict, list, tuple)):
            continue
        if hasattr(value, "config"):
            module.hparams[key] = value.config()
        else:
            del module.hparams[key]  # an object without a recorded config (a callable factory, a module)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through ``atomic_write``: a crash or a full disk leaves the previous file
    (or none) under the final name, never a truncated one. The ``farzi`` command installs it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_save(checkpoint, Path(path))
