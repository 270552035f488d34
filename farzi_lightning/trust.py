"""The trust boundary: which classes a file from elsewhere may name.

Checkpoints, ``summary.pt`` files and trajectory banks name the classes that rebuild them (``class_path``). A
file is data, so what it names is resolved here and nowhere else, against an exact rule:

- the name must be a class (never a function such as ``torch.hub.load`` or ``os.makedirs``);
- a subclass of what that place expects (``Summary`` for a ``summary.pt``, a ``Learner`` for a bank, one of
  ``buildable_bases()`` inside a checkpoint's hyper-parameters);
- defined in this package, torch or Lightning, or in a module this program has already imported itself (a
  class your own config or script named). A module is never imported because a file says so, unless it
  belongs to this package, torch or Lightning.

Anything else is refused with one ``UntrustedFile`` line naming the file and the key, before anything runs.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from typing import Any

from .parts import RecordsInit

#: Packages whose modules a file's class path may import (their classes are still checked like any other).
ROOTS = ("farzi_lightning", "torch", "lightning", "pytorch_lightning", "torchmetrics")

#: The only ``_instantiator`` a checkpoint may name (LightningCLI's own).
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class UntrustedFile(ValueError):
    """A file names something this package will not build (the message names the file and the key)."""


def buildable_bases() -> tuple[type, ...]:
    """What a checkpoint's stored config may build: this package's parts (learners, summaries, inner optimisers,
    start points, the downstream harness, teachers), Lightning modules, data modules, callbacks and loggers,
    torch optimisers and learning-rate schedulers."""
    import torch
    from lightning.pytorch import Callback, LightningDataModule, LightningModule
    from lightning.pytorch.loggers import Logger

    return (RecordsInit, LightningModule, LightningDataModule, Callback, Logger, torch.optim.Optimizer,
            torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def _kind(bases: tuple[type, ...]) -> str:
    if len(bases) > 2:
        return "a part a checkpoint may build (docs/errors.md)"  # buildable_bases()
    return "a subclass of " + " or ".join(b.__name__ for b in bases)


def resolve(path: Any, bases: type | tuple[type, ...], where: str) -> type:
    """The class ``path`` names, if the rule of this module allows it; else ``UntrustedFile`` naming ``where``."""
    bases = bases if isinstance(bases, tuple) else (bases,)

    def refuse(why: str) -> UntrustedFile:
        return UntrustedFile(f"{where} names {path!r}, {why}; refused, nothing was run (a file may name only "
                             f"{_kind(bases)}, defined in {', '.join(ROOTS[:3])} or in a module this program "
                             "imported itself)")

    if not isinstance(path, str) or not _DOTTED.fullmatch(path):
        raise refuse("which is not a dotted class path")
    module_name, _, name = path.rpartition(".")
    module = sys.modules.get(module_name)
    if module is None:
        if module_name.split(".")[0] not in ROOTS:
            raise refuse("a module this program never imported (importing it would run its code)")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise refuse("which does not exist") from None
    obj = inspect.getattr_static(module, name, None)
    if not inspect.isclass(obj):
        raise refuse("which is not a class" if obj is not None else "which does not exist")
    if not issubclass(obj, bases):
        raise refuse("a class of another kind")
    return obj


def build(config: dict[str, Any], bases: type | tuple[type, ...], where: str) -> Any:
    """Instantiate ``{"class_path", "init_args"}`` from a file, through ``resolve``."""
    if not isinstance(config, dict) or "class_path" not in config:
        raise UntrustedFile(f"{where}: expected {{'class_path': ..., 'init_args': {{...}}}}, got {config!r:.80}")
    cls = resolve(config["class_path"], bases, f"{where} (class_path)")
    init_args = config.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise UntrustedFile(f"{where}: init_args must be a mapping, got {type(init_args).__name__}")
    return cls(**init_args)


def check_config(obj: Any, where: str, key: str = "") -> None:
    """Every ``class_path`` / ``_class_path`` in a stored config resolves to a buildable class
    (``buildable_bases()``), every ``_instantiator`` is LightningCLI's own; else ``UntrustedFile``."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{key}.{k}" if key else str(k)
            if k in ("class_path", "_class_path"):
                resolve(v, buildable_bases(), f"{where}: {here}")
            elif k == "_instantiator":
                if v != INSTANTIATOR:
                    raise UntrustedFile(f"{where}: {here} names {v!r}; only {INSTANTIATOR} may build a checkpoint's "
                                        "module; refused, nothing was run")
            else:
                check_config(v, where, here)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_config(v, where, f"{key}[{i}]")
