"""``TrajectoryBank``: learner checkpoints saved while training on real data, sampled as inner-loop start points.

Layout of a bank directory (written by ``farzi_lightning.callbacks.TrajectoryCheckpoint``)::

    bank/manifest.json            {"fingerprint", "vocab_size", "learner": {class_path, init_args}, "entries": [...]}
    bank/<run>/step-000100.pt     the learner's state_dict at that step

Each entry: ``{"run", "step", "max_step", "file", "metrics"}``; ``max_step`` is filled in when the run ends.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .learners import build_learner
from .manifest import MANIFEST, read_manifest, write_manifest  # noqa: F401 (write_manifest: re-exported)


class TrajectoryBank:
    """Loads a bank and samples start points θ0 from it.

    Args:
        path: the bank directory.
        fingerprint: the current data's fingerprint; a bank made on other data is refused (None: unchecked).
        vocab_size: the current vocabulary / item-id count; a mismatch is refused (None: unchecked).
        min_fraction: sample only checkpoints at or after this fraction of their run's steps.
        max_fraction: ... and at or before this fraction (e.g. 0.3: the first 30% of training).
        include_init: whether step-0 checkpoints (the random initialisations) may be sampled.
        cache_size: loaded checkpoints kept in memory (the bilevel loop samples one every outer step).
    """

    def __init__(self, path: str | os.PathLike, fingerprint: str | None = None, vocab_size: int | None = None,
                 min_fraction: float = 0.0, max_fraction: float = 1.0, include_init: bool = True,
                 cache_size: int = 64) -> None:
        self.root = Path(path)
        self.cache_size, self._cache = cache_size, OrderedDict()
        self.manifest = read_manifest(self.root)
        where = self.root / MANIFEST
        if vocab_size is not None and self.manifest.get("vocab_size") != vocab_size:
            raise ValueError(f"{where}: the bank was trained with vocab_size={self.manifest.get('vocab_size')}, but "
                             f"the current data has vocab_size={vocab_size}; make a bank on this data")
        if fingerprint is not None and self.manifest.get("fingerprint") != fingerprint:
            raise ValueError(f"{where}: the bank was made on data with fingerprint "
                             f"{self.manifest.get('fingerprint')}, the current data's is {fingerprint} (different "
                             "data or preprocessing); make a bank on this data")
        if not 0.0 <= min_fraction <= max_fraction <= 1.0:
            raise ValueError(f"need 0 <= min_fraction <= max_fraction <= 1, got {min_fraction}, {max_fraction}")
        entries = self.manifest.get("entries", [])
        incomplete = sorted({e["run"] for e in entries if e.get("max_step") is None})
        if incomplete:  # written before runs were published only when complete: their fractions are unknown
            warnings.warn(f"{where}: run(s) {', '.join(incomplete)} never completed (no max_step); their "
                          "checkpoints are left out", stacklevel=2)
            entries = [e for e in entries if e.get("max_step") is not None]
        self.entries = [e for e in entries if self._selected(e, min_fraction, max_fraction, include_init)]
        if not self.entries:
            raise ValueError(f"{where}: no checkpoint in the bank falls within min_fraction={min_fraction}, "
                             f"max_fraction={max_fraction}, include_init={include_init} "
                             f"({len(entries)} complete checkpoints in all)")
        trained = [e for e in self.entries if e["step"] > 0]
        if len(trained) <= 1 and len(entries) > 3:
            inits = len(self.entries) - len(trained)
            warnings.warn(f"{where}: the window min_fraction={min_fraction}, max_fraction={max_fraction} selects "
                          f"{len(trained)} trained checkpoint(s) of {len(entries)} (plus {inits} initialisations); "
                          "start points will hardly vary", stacklevel=2)
        for entry in self.entries:  # a truncated or missing file fails here, named, not in training_step
            path = self.root / entry["file"]
            if not path.is_file() or not zipfile.is_zipfile(path):
                raise ValueError(f"{path}: missing or truncated bank checkpoint (listed in {where}); rerun the "
                                 "pretrain config to rebuild the bank")

    @staticmethod
    def _selected(entry: dict[str, Any], lo: float, hi: float, include_init: bool) -> bool:
        if entry["step"] == 0:
            return include_init
        fraction = entry["step"] / max(entry.get("max_step") or entry["step"], 1)
        return lo <= fraction <= hi

    @property
    def learner_config(self) -> dict[str, Any]:
        return self.manifest["learner"]

    @property
    def runs(self) -> list[str]:
        return sorted({e["run"] for e in self.entries})

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
        """The checkpoint's parameters (fresh tensors: callers may modify them)."""
        key = (index, str(map_location))
        if key not in self._cache:
            path = self.root / self.entries[index]["file"]
            try:
                self._cache[key] = torch.load(path, map_location=map_location, weights_only=True)
            except Exception as err:  # noqa: BLE001 -- the weights-only unpickler refuses foreign objects
                raise ValueError(f"{path}: not a bank checkpoint of tensors ({type(err).__name__}: "
                                 f"{str(err).strip().splitlines()[0][:120]}); nothing in it was run") from None
            if not isinstance(self._cache[key], dict):
                raise ValueError(f"{path}: not a bank checkpoint (a {type(self._cache.pop(key)).__name__}, "
                                 "expected a state_dict)")
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return {k: v.clone() for k, v in self._cache[key].items()}

    def sample(self, generator: torch.Generator | None = None, map_location: str | torch.device = "cpu"
               ) -> dict[str, Tensor]:
        """A uniformly drawn checkpoint's parameters."""
        index = int(torch.randint(len(self.entries), (1,), generator=generator))
        return self.load(index, map_location)

    def best_index(self, among: list[int] | None = None) -> int:
        """The checkpoint (of ``among``, default all) with the best recorded validation metric (nDCG@k / HR@k
        higher, perplexity lower), else the one furthest along its run: the full-data model a teacher or
        reference uses."""
        def key(i: int) -> tuple:
            metrics = self.entries[i].get("metrics") or {}
            for name, value in sorted(metrics.items()):
                if "ndcg" in name or "hr@" in name:
                    return (1, value)
                if name.endswith("ppl"):
                    return (1, -value)
            entry = self.entries[i]
            return (0, entry["step"] / max(entry.get("max_step") or entry["step"], 1))
        return max(range(len(self.entries)) if among is None else among, key=key)

    def model(self, index: int | None = None, map_location: str | torch.device = "cpu") -> nn.Module:
        """The learner of checkpoint ``index`` (None: ``best_index()``), rebuilt from the bank's architecture."""
        learner = build_learner(self.learner_config, f"{self.root / MANIFEST}: learner")
        learner.load_state_dict(self.load(self.best_index() if index is None else index))
        return learner.to(map_location).eval()

    def check_compatible(self, learner: nn.Module) -> None:
        """Raise unless the bank's parameters have the names and shapes of ``learner``'s."""
        have = {k: tuple(v.shape) for k, v in self.load(0).items()}
        want = {k: tuple(v.shape) for k, v in learner.state_dict().items()}
        if have != want:
            diff = sorted(set(have.items()) ^ set(want.items()))[:4]
            raise ValueError(f"{self.root / MANIFEST}: its checkpoints do not fit the learner (first differences, "
                             f"name and shape: {diff}); the bank was made with {self.learner_config}")
