"""User–item interaction logs (MovieLens 100K ``u.data`` or any CSV/TSV): leave-last-out split, datamodule.

Protocol (docs/distillation.md, "Data protocol"): per user, interactions sorted by (timestamp, file order);
the last item is the test target, the second last the validation target, the rest is training history.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from .base import FilesDataModule
from .events import ItemTitles, Split, describe, leave_last_out, read_interactions
from .windows import (
    IGNORE_INDEX,
    EpochSampler,
    ResumableLoader,
    check_int,
    fingerprint,
    left_pad,
    training_progress,
)


class InteractionDataModule(FilesDataModule):
    """Sequential recommendation on an interaction log, leave-last-out, full-ranking evaluation.

    Training batches are ``(history, next items)``: each user's training sequence (last ``seq_len + 1``
    items, left-padded with 0) shifted by one; targets at padded input positions are ignored. Validation and
    test batches are ``(history, target, seen)``: the last ``seq_len`` items before the held-out one, the
    held-out item, and a ``(B, num_items + 1)`` mask of items the user has already interacted with.

    File work happens in ``prepare_data`` and ``setup`` (``FilesDataModule``), never in the constructor.

    Example: ``farzi fit --config configs/ml100k_pretrain.yaml``.

    Args:
        data_dir: folder holding the file; None: ``$FARZI_DATA_DIR/<name>``.
        name: data set name (sub-folder of ``$FARZI_DATA_DIR``; ``ml-100k`` can be downloaded).
        file: interaction file inside the folder.
        delimiter: column separator (``"\\t"`` for u.data, ``","`` for CSV).
        header: the first line is a header.
        user_col: 0-based column of the user id.
        item_col: 0-based column of the item id.
        timestamp_col: 0-based column of the timestamp (number or ISO-8601 date).
        min_interactions: users with fewer interactions are dropped (at least 3).
        seq_len: longest history fed to the model (the name is shared with the text datamodule).
        batch_size: users per batch.
        num_workers: DataLoader worker processes.
        download: fetch the canonical files when they are absent and a network is there.
        verify: check md5 sums of known files.
        titles: an optional item-title file (``ItemTitles``); decoded summaries then show titles, not ids.
        dedup: keep only each user's first interaction with an item (exact duplicate rows and repeats removed,
            counted in the log): with repeats, a user's validation item can equal their test item.
        encoding: text encoding of the interaction file.
    """

    def __init__(self, data_dir: str | None = None, name: str = "ml-100k", file: str = "u.data",
                 delimiter: str = "\t", header: bool = False, user_col: int = 0, item_col: int = 1,
                 timestamp_col: int = 3, min_interactions: int = 3, seq_len: int = 50, batch_size: int = 128,
                 num_workers: int = 0, download: bool = True, verify: bool = True,
                 titles: ItemTitles | None = None, dedup: bool = True, encoding: str = "utf-8") -> None:
        super().__init__()
        self.save_hyperparameters()
        for key, value, minimum in (("seq_len", seq_len, 1), ("batch_size", batch_size, 1),
                                    ("min_interactions", min_interactions, 3), ("num_workers", num_workers, 0),
                                    ("user_col", user_col, 0), ("item_col", item_col, 0),
                                    ("timestamp_col", timestamp_col, 0)):
            check_int(f"data.init_args.{key}", value, minimum)
        if len({user_col, item_col, timestamp_col}) < 3:
            raise ValueError(f"data.init_args: user_col={user_col}, item_col={item_col} and timestamp_col="
                             f"{timestamp_col} must be three different columns")
        if not delimiter:
            raise ValueError("data.init_args.delimiter must not be empty (\\t for TSV, , for CSV)")
        self.seq_len, self.batch_size, self.num_workers = seq_len, batch_size, num_workers
        self.titles = titles
        self._split: Split | None = None
        self._names: list[str] | None = None

    # ---- file work (FilesDataModule): prepare_data finds / downloads / verifies, setup parses ----

    def required_files(self) -> list[str]:
        return [self.hparams.file]

    def parse(self, root: Path) -> None:
        """Read the interaction file, de-duplicate, split leave-last-out (and read the titles)."""
        h = self.hparams
        path = root / h.file
        self.train_file = path  # the file a summary's size on disk is compared with
        rows = read_interactions(path, delimiter=h.delimiter, header=h.header, user_col=h.user_col,
                                 item_col=h.item_col, timestamp_col=h.timestamp_col, encoding=h.encoding)
        split = leave_last_out(rows, h.min_interactions, path, dedup=h.dedup)
        rank_zero_info(describe(split.report, path))
        full = sum(len(t) >= self.seq_len + 1 for t in split.train)
        if full < len(split.train) / 2:
            lengths = sorted(len(t) for t in split.train)
            rank_zero_warn(f"data.init_args.seq_len={self.seq_len}: only {full} of {len(split.train)} users have "
                           f"{self.seq_len + 1} training events (median {lengths[len(lengths) // 2]}); most rows are "
                           "mostly padding, and a summary that long is longer than most real sequences")
        flat = torch.tensor([i for t in split.train for i in t] + split.valid + split.test)
        self._fingerprint = fingerprint(flat, split.num_items + 1)
        self._split = split
        if self.titles is not None:
            titles = self.titles.read(root)
            self._names = ["<pad>", *(titles.get(i, i) for i in self._split.item_ids)]

    @property
    def split(self) -> Split:
        self.setup()
        return self._split

    @property
    def vocab_size(self) -> int:
        """Item ids 0..num_items, 0 being padding."""
        return self.split.num_items + 1

    @property
    def num_items(self) -> int:
        return self.split.num_items

    def vocabulary(self) -> list[str]:
        """Name of every id: ``<pad>`` then the original item ids."""
        return ["<pad>", *self.split.item_ids]

    def names(self) -> list[str]:
        """What a person reads for every id: item titles when ``titles`` is set, else the original ids."""
        self.setup()
        return self._names or self.vocabulary()

    def decode(self, ids: Tensor) -> str:
        """Items of one sequence, padding dropped: titles separated by `` | ``, or ids by spaces."""
        names = self.names()
        return (" | " if self._names else " ").join(names[int(i)] for i in ids if int(i) > 0)

    def train_counts(self) -> Tensor:
        """``(vocab_size,)`` how often each item occurs in the training split (the popularity floor)."""
        flat = torch.tensor([i for s in self.split.train for i in s], dtype=torch.long)
        return torch.bincount(flat, minlength=self.vocab_size)

    def real_sequences(self, split: str = "train") -> Tensor:
        """Each user's training sequence, last ``seq_len + 1`` items, left-padded: ``(users, seq_len + 1)``."""
        return torch.stack([left_pad(s, self.seq_len + 1) for s in self.split.train])

    def _train_dataset(self) -> TensorDataset:
        seqs = self.real_sequences()
        x, y = seqs[:, :-1], seqs[:, 1:].clone()
        y[x == 0] = IGNORE_INDEX  # as in SASRec: no prediction from a padding-only position
        keep = (y != IGNORE_INDEX).any(dim=1)
        return TensorDataset(x[keep], y[keep])

    def _eval_dataset(self, split: str) -> TensorDataset:
        s = self.split
        history = s.train if split == "valid" else [t + [v] for t, v in zip(s.train, s.valid)]
        target = s.valid if split == "valid" else s.test
        x = torch.stack([left_pad(h, self.seq_len) for h in history])
        seen = torch.zeros(len(history), self.vocab_size, dtype=torch.bool)
        for u, h in enumerate(history):
            seen[u, h] = True
        return TensorDataset(x, torch.tensor(target), seen)

    def train_dataloader(self) -> DataLoader:
        dataset = self._train_dataset()
        loader = ResumableLoader(dataset, batch_size=self.batch_size, sampler=EpochSampler(len(dataset)),
                                 num_workers=self.num_workers)
        loader.progress = lambda: training_progress(self)
        return loader

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._eval_dataset("valid"), batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._eval_dataset("test"), batch_size=self.batch_size, num_workers=self.num_workers)
