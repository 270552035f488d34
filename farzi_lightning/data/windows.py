"""Small pieces shared by the datamodules."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from ..seeds import epoch_order, global_seed

IGNORE_INDEX = -100
"""Target value of positions that carry no label (padding); ``F.cross_entropy``'s default ``ignore_index``."""


def fingerprint(train: Tensor, vocab_size: int) -> str:
    """A short digest of the training data and vocabulary size: a trajectory bank made on other data is refused."""
    return hashlib.sha1(train.contiguous().numpy().tobytes() + str(vocab_size).encode()).hexdigest()[:16]


#: The UTF-8 byte-order mark some editors and spreadsheet exports put at the start of a file.
BOM = b"\xef\xbb\xbf"


def read_lines(path: Path, encoding: str = "utf-8", key: str = "data.init_args.encoding") -> list[str]:
    """The file's lines, decoded one by one so that a bad byte is reported with its ``file:line``."""
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, expected a file") from None
    if encoding.replace("-", "").replace("_", "").lower() in ("utf8", "utf8sig") and raw.startswith(BOM):
        raw = raw[len(BOM):]  # a byte-order mark would glue itself to the first id or word
        warnings.warn(f"{path}: removed the UTF-8 byte-order mark at the start of the file", stacklevel=2)
    lines = []
    for n, line in enumerate(raw.splitlines(), 1):
        try:
            lines.append(line.decode(encoding))
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}:{n}: byte {line[err.start]:#04x} at column {err.start + 1} is not valid "
                             f"{encoding} text; set {key} (e.g. latin-1)") from None
        except LookupError:
            raise ValueError(f"{key}: unknown text encoding {encoding!r}") from None
    return lines


def natural_key(value: str) -> tuple[int, int | str]:
    """Sort key of an id: integers by value first, then any other string."""
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)  # type: ignore[return-value]


def check_int(key: str, value, minimum: int) -> None:
    """Raise naming ``key`` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")


def local_rank_zero() -> bool:
    """Whether this process may download: local rank 0 (``LOCAL_RANK`` is set by Lightning's launchers)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0


def left_pad(seq: list[int], length: int, pad: int = 0) -> Tensor:
    """The last ``length`` items of ``seq``, left-padded with ``pad``."""
    seq = seq[-length:]
    out = torch.full((length,), pad, dtype=torch.long)
    if seq:
        out[length - len(seq):] = torch.tensor(seq, dtype=torch.long)
    return out


class EpochSampler(Sampler[int]):
    """A random permutation per epoch, drawn from ``(seed, epoch)`` alone.

    Lightning calls ``set_epoch`` at every epoch start, so a run resumed from a checkpoint sees the same
    batches as an uninterrupted one (``shuffle=True`` draws from the global RNG, which checkpoints omit).
    The seed defaults to ``PL_GLOBAL_SEED`` (set by ``seed_everything``).

    Args:
        n: dataset length.
        seed: base seed (None: ``PL_GLOBAL_SEED`` or 0).
    """

    def __init__(self, n: int, seed: int | None = None) -> None:
        self.n, self.epoch = n, 0
        self.seed = global_seed() if seed is None else seed
        self._resume: tuple[int, int] | None = None  # (epoch, rows already trained on) for the next pass

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, rows: int) -> None:
        """The next pass, if it is of ``epoch``, starts after its first ``rows`` rows (a mid-epoch resume)."""
        self._resume = (epoch, rows)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = epoch_order(self.epoch, self.seed)
        order = torch.randperm(self.n, generator=generator).tolist()
        if self._resume is not None:
            epoch, rows = self._resume
            self._resume = None
            if epoch == self.epoch:
                order = order[rows:]
        return iter(order)


class ResumableLoader(DataLoader):
    """The training loader of the data modules: resumable mid-epoch.

    Lightning saves its ``state_dict`` with every checkpoint: the epoch and how many of its batches the run had
    trained on (read from the trainer through ``progress``, so batches fetched ahead are not counted), and hands
    it back on resume; the ``EpochSampler`` then skips those batches, so a run resumed from a checkpoint written
    mid-epoch (e.g. on a trajectory bank's schedule) trains on exactly the batches an uninterrupted run would.
    Under a distributed sampler the resume is at the epoch's start (Lightning warns).
    """

    progress = None  # () -> (epoch, batches trained on in it), set by the data module

    def state_dict(self) -> dict[str, int]:
        if self.progress is None:
            return {}
        epoch, batches = self.progress()
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state and isinstance(self.sampler, EpochSampler) and self.batch_size:
            self.sampler.resume(state["epoch"], state["batches"] * self.batch_size)


def training_progress(data: Any) -> tuple[int, int]:
    """(current epoch, batches trained on in it) of the trainer fitting ``data`` (for ``ResumableLoader``)."""
    trainer = getattr(data, "trainer", None)
    if trainer is None:
        return (0, 0)
    return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed
