"""``FilesDataModule``: where the data modules do their file work, the Lightning way."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from .locate import resolve
from .windows import local_rank_zero


class FilesDataModule(pl.LightningDataModule):
    """The constructor touches no file: ``prepare_data`` (Lightning: local rank 0 of each node) finds, downloads
    and verifies the files; ``setup`` parses them once per process. Reading the parsed data before ``setup``
    (the CLI reads ``vocab_size`` to size the learner) parses it early, downloading only on local rank 0.

    Subclasses save ``name``, ``data_dir``, ``download`` and ``verify`` as hyper-parameters and implement
    ``required_files()`` and ``parse(root)``, which sets ``_fingerprint`` and whatever else they serve.
    """

    _root: Path | None = None
    _parsed: bool = False
    _fingerprint: str

    def required_files(self) -> list[str]:
        """File names that must be in the data folder (and are downloaded for the known data sets)."""
        raise NotImplementedError

    def parse(self, root: Path) -> None:
        """Read the files under ``root``."""
        raise NotImplementedError

    def _resolve(self, download: bool, check: bool) -> None:
        h = self.hparams
        self._root = resolve(h.name, h.data_dir, self.required_files(), download=download, check=check)

    def prepare_data(self) -> None:
        """Find the files, download them when absent, verify known md5 sums."""
        if self._root is None:
            self._resolve(self.hparams.download, self.hparams.verify)

    def setup(self, stage: str | None = None) -> None:
        """Parse the files (once per process)."""
        if self._parsed:
            return
        if self._root is None:  # read before prepare_data ran in this process: only local rank 0 downloads
            self._resolve(self.hparams.download and local_rank_zero(), self.hparams.verify and local_rank_zero())
        self.parse(self._root)
        self._parsed = True

    @property
    def fingerprint(self) -> str:
        """A digest of the data and the vocabulary size (a bank made on other data is refused)."""
        self.setup()
        return self._fingerprint

    def predict_dataloader(self) -> DataLoader:
        """What the model predicts over, which the model knows (a distillation: its summary's rows)."""
        return self.trainer.lightning_module.predict_dataloader()
