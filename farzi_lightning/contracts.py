"""The contracts between the parts, checked where a part is built, so a broken extension fails at once with
the member it lacks (``docs/extending.md`` shows one of each).

- a **learner** (``farzi_lightning.learners.Learner``): ``vocab_size``, ``padding_idx`` (None: no padding),
  ``max_len`` (longest input), ``config()`` (rebuildable), ``forward(tokens)`` reading ids ``(B, L)`` or soft
  tokens ``(B, L, V)`` → logits ``(B, L, V)``;
- a **summary** (``farzi_lightning.summaries.Summary``): ``vocab_size``, ``num_sequences``, ``seq_len``,
  ``padding_idx``, ``logits(indices)``; optional ``load_rows`` / ``init_noise`` for ``init``;
- the **data** a distillation reads (``DistillationData``): the members below;
- a **start point** (``farzi_lightning.starts.StartPoint``): ``sample(module, generator)``;
- an **inner optimiser** (``farzi_lightning.inner.ReversibleOptimizer``): see its docstring.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor
from torch.utils.data import DataLoader

LEARNER = ("vocab_size", "padding_idx", "max_len", "config", "forward")
SUMMARY = ("vocab_size", "num_sequences", "seq_len", "padding_idx", "logits")
DATA = ("vocab_size", "fingerprint", "real_sequences", "vocabulary", "train_counts", "train_dataloader",
        "val_dataloader", "test_dataloader")


@runtime_checkable
class DistillationData(Protocol):
    """What ``FarziLightningModule`` reads from a data module (both shipped ones provide it)."""

    vocab_size: int  # ids 0..vocab_size-1
    fingerprint: str  # a digest of the data: banks made on other data are refused

    def real_sequences(self) -> Tensor:
        """``(N, L)`` training rows of real ids (summaries start from them)."""

    def vocabulary(self) -> list[str]:
        """The name of every id (exported with the summary)."""

    def train_counts(self) -> Tensor:
        """``(vocab_size,)`` token counts of the training split."""

    def train_dataloader(self) -> DataLoader: ...

    def val_dataloader(self) -> DataLoader: ...

    def test_dataloader(self) -> DataLoader: ...


def missing(obj: object, members: tuple[str, ...]) -> list[str]:
    return [m for m in members if not hasattr(obj, m)]


def require(obj: object, members: tuple[str, ...], what: str, key: str) -> None:
    """Raise ``TypeError`` naming ``key`` and every member of the ``what`` contract that ``obj`` lacks."""
    lacking = missing(obj, members)
    if lacking:
        raise TypeError(f"{key}: {type(obj).__name__} breaks the {what} contract: it has no "
                        f"{', '.join(lacking)} (docs/extending.md)")


def check_lengths(data: object, learner: object) -> None:
    """The data's rows must fit the learner: ``data.seq_len`` ≤ ``learner.max_len`` (both keys named)."""
    seq_len, max_len = getattr(data, "seq_len", None), getattr(learner, "max_len", None)
    if seq_len is not None and max_len is not None and seq_len > max_len:
        raise ValueError(f"data.init_args.seq_len={seq_len} is longer than model.init_args.learner.init_args."
                         f"max_len={max_len}: the learner cannot read a whole row; keep the two equal")
