"""``BankLearner``: the learner a trajectory bank was trained with, rebuilt from its manifest, so a distillation
config names the bank once instead of repeating the pretrain config's learner block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from ..manifest import read_manifest
from .base import Learner, build_learner


class BankLearner(Learner):
    """Builds (and returns) the bank's own learner class with the bank's arguments.

    Example (YAML)::

        learner:
          class_path: farzi_lightning.learners.BankLearner
          init_args:
            path: runs/banks/ml100k_sasrec

    Args:
        vocab_size: linked from the data by the CLI; must equal the bank's.
        path: the trajectory bank directory (its ``manifest.json`` records the learner).
    """

    def __new__(cls, vocab_size: int, path: str) -> Any:
        manifest = read_manifest(Path(path))
        config = manifest.get("learner")
        if not config:
            raise ValueError(f"{Path(path) / 'manifest.json'}: the bank records no learner")
        if config.get("init_args", {}).get("vocab_size") != vocab_size:
            raise ValueError(f"{Path(path) / 'manifest.json'}: the bank's learner has vocab_size="
                             f"{config.get('init_args', {}).get('vocab_size')}, the data has {vocab_size}")
        # not a BankLearner: Python then skips __init__
        return build_learner(config, f"{Path(path) / 'manifest.json'}: learner")

    def forward(self, tokens: Tensor) -> Tensor:  # pragma: no cover - never an instance of this class
        raise NotImplementedError
