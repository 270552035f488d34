"""What a distillation checks before it runs, and how it describes its summary: the module's arguments (each
refusal names its config key), the summary's size next to the data, and the summary's size line."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from .data.windows import check_int
from .learners import Learner
from .summaries import Summary

KEY = "model.init_args"


def check_parts(learner: nn.Module, summary: Summary | None) -> None:
    """The learner is a ``Learner``; the summary (once built: None before) a ``Summary`` the learner reads in
    full; a summary without a padding token takes the learner's."""
    if not isinstance(learner, Learner):
        raise TypeError(f"{KEY}.learner: {type(learner).__name__} is not a farzi_lightning.learners.Learner "
                        "(vocab_size, padding_idx, max_len, config(), forward; docs/extending.md)")
    if summary is None:
        return
    if not isinstance(summary, Summary):
        raise TypeError(f"{KEY}.summary: {type(summary).__name__} is not a farzi_lightning.summaries.Summary")
    if summary.padding_idx is None:
        summary.padding_idx = learner.padding_idx
    max_len = learner.max_len
    if max_len is not None and summary.seq_len - 1 > max_len:
        raise ValueError(f"{KEY}.summary.init_args.seq_len={summary.seq_len} needs the learner to read "
                         f"{summary.seq_len - 1} tokens, but {KEY}.learner.init_args.max_len={max_len}")


def check_arguments(summary: Summary, meta_batch_size: int, max_nonfinite_steps: int, inner_batch_size: int,
                    summary_top_k: int | None, summary_rank: int | None, gradient_clip_val: float | None,
                    gradient_clip_relative: float | None = None, outer_batch_size: int | None = None,
                    summary_bits: int = 16) -> None:
    """The module's numeric arguments (one line naming the key); an inner batch above the summary warns."""
    check_int(f"{KEY}.meta_batch_size", meta_batch_size, 1)
    check_int(f"{KEY}.max_nonfinite_steps", max_nonfinite_steps, 1)
    check_int(f"{KEY}.inner_batch_size", inner_batch_size, 0)
    if inner_batch_size > summary.num_sequences:
        rank_zero_warn(f"{KEY}.inner_batch_size={inner_batch_size} is larger than the summary ({KEY}.summary."
                       f"init_args.num_sequences={summary.num_sequences}): every inner step reads all "
                       f"{summary.num_sequences} rows")
    if summary_top_k is not None:
        check_int(f"{KEY}.summary_top_k", summary_top_k, 1)
    if summary_rank is not None:
        check_int(f"{KEY}.summary_rank", summary_rank, 1)
        if summary_top_k is not None:
            raise ValueError(f"{KEY}: set summary_top_k or summary_rank, not both")
    if summary_bits not in (8, 16):
        raise ValueError(f"{KEY}.summary_bits must be 8 or 16, got {summary_bits!r}")
    for key, value in (("gradient_clip_val", gradient_clip_val), ("gradient_clip_relative", gradient_clip_relative)):
        if value is not None and not value > 0:
            raise ValueError(f"{KEY}.{key} must be positive or null, got {value}")
    if outer_batch_size is not None:
        check_int(f"{KEY}.outer_batch_size", outer_batch_size, 0)


def make_optimizers(optimizer_factory, scheduler_factory, params) -> Any:
    """The outer optimiser over ``params`` and its per-step schedule; a bad value names its config key."""
    try:
        optimizer = optimizer_factory(params)
    except ValueError as err:  # torch.optim's "Invalid learning rate: -0.1"
        raise ValueError(f"{KEY}.optimizer: {err}") from None
    if scheduler_factory is None:
        return optimizer
    try:
        scheduler = scheduler_factory(optimizer)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{KEY}.lr_scheduler: {err}") from None
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def check_size(summary: Summary, real: Tensor) -> None:
    """Warn when the summary is not small next to the data ``real`` ``(N, L)``, or longer than most real
    sequences."""
    s, key = summary, f"{KEY}.summary.init_args"
    if s.num_sequences >= len(real):
        rank_zero_warn(f"{key}.num_sequences={s.num_sequences}: the data has only {len(real)} training sequences; "
                       "the summary is not smaller than the data")
    if s.padding_idx is not None:
        lengths = (real != s.padding_idx).sum(1)
        full = int((lengths >= s.seq_len).sum())
        if full < len(real) / 2:
            rank_zero_warn(f"{key}.seq_len={s.seq_len} is longer than most real sequences: {full} of {len(real)} "
                           f"have {s.seq_len} tokens (median {int(lengths.median())}); padded positions of the "
                           "initial rows are filled with tokens drawn from the data. A shorter summary fits the "
                           "data better")


def size_line(summary: Summary, data: Any = None) -> str:
    """The summary's parameters and its size in tokens as a share of ``data``'s training tokens."""
    s = summary
    shapes = ", ".join(f"{n} {tuple(p.shape)}" for n, p in s.named_parameters())
    line = (f"Summary: {type(s).__name__} [{shapes}] = {s.num_sequences} sequences x {s.seq_len} tokens = "
            f"{s.size_tokens:,} tokens")
    if data is not None:
        total = int(data.train_counts().sum())
        line += f", {100 * s.size_tokens / total:.2f}% of the {total:,} training tokens"
    return line
