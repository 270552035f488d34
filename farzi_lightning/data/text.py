"""Word-level text corpora (PTB or any ``train/valid/test`` text files): vocabulary, windows, datamodule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .base import FilesDataModule
from .windows import (
    IGNORE_INDEX,
    EpochSampler,
    ResumableLoader,
    check_int,
    fingerprint,
    read_lines,
    training_progress,
)

EOS, UNK = "<eos>", "<unk>"
SPLITS = ("train", "valid", "test")


def split_files(root: Path, files: dict[str, str] | None = None) -> dict[str, Path]:
    """The split files: ``files`` when given (relative to ``root`` or absolute), else ``ptb.<split>.txt``,
    ``<split>.txt`` or any ``<name>.<split>.txt`` (one per split). Errors list the ``.txt`` files found."""
    found: dict[str, Path] = {}
    if files is not None:
        unknown = set(files) - set(SPLITS)
        if unknown or set(files) != set(SPLITS):
            raise ValueError(f"data.init_args.files must name exactly train, valid and test, got {sorted(files)}")
        for split, name in files.items():
            path = root / name
            if not path.is_file():
                raise FileNotFoundError(f"data.init_args.files.{split}: {path} not found")
            found[split] = path
        return found
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    txt = sorted(p.name for p in root.iterdir() if p.name.endswith(".txt") and p.is_file())
    for split in SPLITS:
        preferred = [n for n in (f"ptb.{split}.txt", f"{split}.txt") if n in txt]
        named = preferred or [n for n in txt if n.endswith(f".{split}.txt")]
        if len(named) > 1:
            raise ValueError(f"{root}: several {split} files ({', '.join(named)}); name them in data.init_args.files")
        if named:
            found[split] = root / named[0]
    if set(found) != set(SPLITS):
        raise FileNotFoundError(f"{root}: expected train, valid and test files (<split>.txt or <name>.<split>.txt, "
                                f"or data.init_args.files), found {', '.join(txt) or 'no .txt files'}")
    return found


def read_words(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    """Lines of whitespace-separated words; errors name the file (and the line of a bad byte)."""
    lines = [line.split() for line in read_lines(path, encoding)]
    if not any(lines):
        raise ValueError(f"{path}: the file is empty (expected whitespace-separated words, one sentence a line)")
    return lines


class Vocabulary:
    """Token ↔ id built from the training split: ``<eos>`` first, then words by decreasing frequency.

    Args:
        lines: training lines (lists of words).
        max_vocab: keep at most this many entries (``<unk>`` included); rarer words map to ``<unk>``.
        held_out: validation and test lines: when they hold words the training split lacks, ``<unk>`` is added
            so that they map to it (a raw corpus needs no hand-made ``<unk>``).
    """

    def __init__(self, lines: list[list[str]], max_vocab: int | None = None,
                 held_out: list[list[str]] | None = None) -> None:
        counts = Counter(w for line in lines for w in line)
        words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in (EOS, UNK)]
        unseen = any(w not in counts and w != EOS for line in held_out or [] for w in line)
        specials = [EOS] + ([UNK] if UNK in counts or unseen or (max_vocab is not None and len(words) + 1 > max_vocab)
                            else [])
        if max_vocab is not None:
            words = words[: max(0, max_vocab - len(specials))]
        self.itos = specials + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, lines: list[list[str]], path: Path) -> Tensor:
        """One id stream with ``<eos>`` after every line; unknown words → ``<unk>`` (error if there is none)."""
        unk = self.stoi.get(UNK)
        ids = []
        for n, line in enumerate(lines, 1):
            for w in line:
                i = self.stoi.get(w, unk)
                if i is None:
                    raise ValueError(f"{path}:{n}: word {w!r} is not in the training vocabulary and the vocabulary "
                                     "has no <unk>; set max_vocab or map rare words to <unk>")
                ids.append(i)
            ids.append(self.stoi[EOS])
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Tensor) -> list[str]:
        return [self.itos[int(i)] for i in ids]


class StreamWindows(Dataset):
    """A token stream cut into consecutive windows: ``(input, target)`` of length ``seq_len`` each.

    Every token after the first is predicted exactly once; the last window is padded, its padding targets
    are ``IGNORE_INDEX``, so summed losses cover the whole split.
    """

    def __init__(self, stream: Tensor, seq_len: int) -> None:
        self.stream, self.seq_len = stream, seq_len
        self.n = max(1, -(-(len(stream) - 1) // seq_len))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        chunk = self.stream[i * self.seq_len: (i + 1) * self.seq_len + 1]
        x = torch.zeros(self.seq_len, dtype=torch.long)
        y = torch.full((self.seq_len,), IGNORE_INDEX, dtype=torch.long)
        x[: len(chunk) - 1], y[: len(chunk) - 1] = chunk[:-1], chunk[1:]
        return x, y


class TextDataModule(FilesDataModule):
    """Word-level language modelling on a folder of ``train/valid/test`` text files (PTB recognised by name).

    File work happens in ``prepare_data`` and ``setup`` (``FilesDataModule``), never in the constructor.

    Example: ``farzi fit --config configs/ptb_pretrain.yaml``.

    Args:
        data_dir: folder with the split files; None: ``$FARZI_DATA_DIR/<name>``.
        name: data set name (sub-folder of ``$FARZI_DATA_DIR``, and what to download: ``ptb``).
        seq_len: tokens per training window (and per evaluation window).
        batch_size: windows per batch.
        max_vocab: cap on the vocabulary (rarer words become ``<unk>``); None keeps every training word.
        num_workers: DataLoader worker processes.
        download: fetch the canonical files when they are absent and a network is there.
        verify: check md5 sums of known files.
        files: explicit ``{train, valid, test}`` file names (relative to the folder, or absolute); None: found by
            name (``ptb.<split>.txt``, ``<split>.txt`` or ``<name>.<split>.txt``).
        encoding: text encoding of the files.
    """

    def __init__(self, data_dir: str | None = None, name: str = "ptb", seq_len: int = 35, batch_size: int = 20,
                 max_vocab: int | None = None, num_workers: int = 0, download: bool = True,
                 verify: bool = True, files: dict[str, str] | None = None, encoding: str = "utf-8") -> None:
        super().__init__()
        self.save_hyperparameters()
        for key, value, minimum in (("seq_len", seq_len, 2), ("batch_size", batch_size, 1),
                                    ("num_workers", num_workers, 0)):
            check_int(f"data.init_args.{key}", value, minimum)
        if max_vocab is not None:
            check_int("data.init_args.max_vocab", max_vocab, 3)  # <eos>, <unk> and at least one word
        self.data_dir, self.name, self.seq_len, self.batch_size = data_dir, name, seq_len, batch_size
        self.num_workers = num_workers
        self._vocab: Vocabulary | None = None

    # ---- file work (FilesDataModule): prepare_data finds / downloads / verifies, setup parses ----

    def required_files(self) -> list[str]:
        if self.hparams.files is not None:
            return []  # named files are checked by split_files, with their key
        return [f"ptb.{s}.txt" for s in SPLITS] if self.name == "ptb" else []

    def parse(self, root: Path) -> None:
        """Read the splits, build the vocabulary, encode."""
        h = self.hparams
        files = split_files(root, h.files)
        self.train_file = files["train"]  # the file a summary's size on disk is compared with
        lines = {s: read_words(p, h.encoding) for s, p in files.items()}
        vocab = Vocabulary(lines["train"], h.max_vocab, held_out=lines["valid"] + lines["test"])
        self._streams = {s: vocab.encode(lines[s], files[s]) for s in SPLITS}
        for split, stream in self._streams.items():
            need = h.seq_len + 1  # one whole window of seq_len next-word predictions
            if len(stream) < need:
                purpose = (f"{'train on' if split == 'train' else 'score'} one window of data.init_args.seq_len="
                           f"{h.seq_len}")
                raise ValueError(f"{files[split]}: the {split} split has {len(stream)} token(s) (end-of-line markers "
                                 f"included); at least {need} are needed to {purpose}")
        unk = vocab.stoi.get(UNK)
        counts = {s: int((self._streams[s] == unk).sum()) if unk is not None else 0 for s in SPLITS}
        rank_zero_info(f"{root}: vocabulary of {len(vocab):,} from {files['train'].name}; <unk> tokens: "
                       + ", ".join(f"{s} {counts[s]:,} of {len(self._streams[s]):,}" for s in SPLITS))
        self._fingerprint = fingerprint(self._streams["train"], len(vocab))
        self._vocab = vocab

    @property
    def vocab(self) -> Vocabulary:
        self.setup()
        return self._vocab

    @property
    def streams(self) -> dict[str, Tensor]:
        """``{split: (tokens,) ids}``."""
        self.setup()
        return self._streams

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def max_len(self) -> int:
        return self.seq_len

    def vocabulary(self) -> list[str]:
        """Word of every id."""
        return list(self.vocab.itos)

    def names(self) -> list[str]:
        """What a person reads for every id: the word."""
        return self.vocabulary()

    def decode(self, ids: Tensor) -> str:
        return " ".join(self.vocab.decode(ids))

    def train_counts(self) -> Tensor:
        """``(vocab_size,)`` how often each word occurs in the training stream (the unigram floor)."""
        return torch.bincount(self.streams["train"], minlength=self.vocab_size)

    def real_sequences(self, split: str = "train") -> Tensor:
        """All training windows as hard ids ``(N, seq_len + 1)`` (used to initialise and sample summaries)."""
        stream = self.streams[split]
        n = (len(stream) - 1) // self.seq_len
        return torch.stack([stream[i * self.seq_len: (i + 1) * self.seq_len + 1] for i in range(n)])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = StreamWindows(self.streams[split], self.seq_len)
        kind = ResumableLoader if shuffle else DataLoader
        loader = kind(dataset, batch_size=self.batch_size, sampler=EpochSampler(len(dataset)) if shuffle else None,
                      num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
        if shuffle:
            loader.progress = lambda: training_progress(self)
        return loader

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
