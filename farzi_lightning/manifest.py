"""A trajectory bank's ``manifest.json``: what the bank holds (data fingerprint, vocabulary, learner config, one
entry per saved checkpoint). Read by the bank, its learner (``BankLearner``) and its writer
(``TrajectoryCheckpoint``); imports nothing of this package but ``files``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .files import atomic_write

MANIFEST = "manifest.json"


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a trajectory bank (make one with a pretrain config, e.g. "
                                "farzi fit --config configs/ml100k_pretrain.yaml)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write(root / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
