"""Checkpoints a person hands the CLI: found (``--ckpt_path last``), verified, and of the right kind.

- ``read_checkpoint(path)`` loads with ``weights_only=True`` and turns a truncated or foreign file into one
  ``ValueError`` naming it;
- ``check_class_paths(obj)`` refuses any ``class_path`` (or Lightning's ``_instantiator``) outside this
  package, torch and Lightning, before anything would import it;
- ``find_last(root)`` is the newest ``last.ckpt`` of the runs under ``root``.
"""

from __future__ import annotations

import inspect
import zipfile
from pathlib import Path
from typing import Any

import torch

#: Import prefixes a checkpoint may name as a class to build.
ALLOWED_PREFIXES = ("farzi_lightning.", "torch.", "lightning.", "pytorch_lightning.", "torchmetrics.")


def read_checkpoint(path: str | Path, key: str = "--ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents (tensors and plain types only); a bad file raises naming ``key`` and path."""
    path = Path(path)
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
    check_class_paths(checkpoint.get("hyper_parameters", {}), f"{key}: {path}")
    return checkpoint


def check_class_paths(obj: Any, where: str) -> None:
    """Refuse any ``class_path``, ``_class_path`` or ``_instantiator`` outside ``ALLOWED_PREFIXES``."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("class_path", "_class_path", "_instantiator") and isinstance(v, str):
                if not v.startswith(ALLOWED_PREFIXES):
                    raise ValueError(f"{where}: names the class {v!r}; only classes of "
                                     f"{', '.join(p.rstrip('.') for p in ALLOWED_PREFIXES)} are built from a "
                                     "checkpoint")
            else:
                check_class_paths(v, where)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            check_class_paths(v, where)


def checkpoint_class(checkpoint: dict[str, Any]) -> str | None:
    """The import path of the module class that wrote the checkpoint (as the CLI records it), if known."""
    return checkpoint.get("hyper_parameters", {}).get("_class_path")


def find_last(root: str | Path) -> Path | None:
    """The most recently written ``last.ckpt`` under ``root`` (any run folder), or None."""
    found = [p for p in Path(root).glob("**/last.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


class VerifiedLoad:
    """Mixin for LightningModules: ``load_from_checkpoint`` verifies the file first (``read_checkpoint``), so a
    damaged file is named and a checkpoint naming foreign classes is refused before Lightning imports them."""

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
