"""Writing a summary for people and other trainers: ``summary.pt`` and ``summary.txt`` next to the checkpoints,
and ``load_summary`` to rebuild the ``Summary`` from the file alone."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch import nn

from .files import atomic_write
from .learners import build_learner
from .summaries import Feed, Summary


def export_dir(trainer: Trainer) -> Path:
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir)


def decode_rows(data: Any, ids: torch.Tensor) -> list[str]:
    """One line per sequence of ``ids`` ``(n, L)`` in the data's own names (``decode``: words, item titles), else
    the ids (``farzi predict``, ``SummaryMonitor``)."""
    if hasattr(data, "decode"):
        return [data.decode(row) for row in ids]
    return [" ".join(str(int(i)) for i in row) for row in ids]


def summary_payload(summary: Summary, vocabulary: list[str], feed: Feed | None = None,
                    learner: nn.Module | None = None, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``summary.pt`` holds (plain types and tensors: loads with ``weights_only=True``):

    ``tokens`` (n, L) int64 argmax ids; ``state_dict``; ``vocabulary``; ``class`` (import path);
    ``init_args`` (the summary's constructor arguments); ``feed`` (input mode and temperatures); ``learner``
    (the learner config it was distilled for); ``recipe`` (downstream optimiser, lr, steps, batch size).
    """
    config = summary.config()
    init_args = dict(config["init_args"], padding_idx=summary.padding_idx)
    return {"tokens": summary.decode().cpu(),
            "state_dict": {k: v.detach().cpu() for k, v in summary.state_dict().items()},
            "vocabulary": list(vocabulary), "class": config["class_path"], "init_args": init_args,
            "feed": (feed or Feed()).config(), "learner": learner.config() if learner is not None else None,
            "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in (recipe or {}).items()}}


def save_summary(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (a crash leaves the old file or none, never half of one)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(Path(path), lambda f: f.write(buffer.getvalue()))
    return Path(path)


def export_summary(summary: Summary, trainer: Trainer, feed: Feed | None = None, learner: nn.Module | None = None,
                   recipe: dict[str, Any] | None = None) -> Path:
    """Save ``summary.pt`` (see ``summary_payload``) and ``summary.txt`` (one decoded row a line); returns the
    ``summary.pt`` path."""
    data = trainer.datamodule
    vocabulary = data.vocabulary() if hasattr(data, "vocabulary") else [str(i) for i in range(summary.vocab_size)]
    payload = summary_payload(summary, vocabulary, feed, learner, recipe)
    root = export_dir(trainer)
    save_summary(root / "summary.pt", payload)
    lines = [" ".join(vocabulary[int(i)] for i in row) for row in payload["tokens"]]
    atomic_write(root / "summary.txt", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    return root / "summary.pt"


def load_summary(path: str | Path, map_location: str | torch.device = "cpu") -> Summary:
    """Rebuild the ``Summary`` module of a ``summary.pt`` from the file alone.

    The returned module also carries ``feed`` (a ``Feed``), ``learner_config`` and ``recipe`` from the file,
    so ``farzi_lightning.bilevel.train_steps`` can train any learner on it as ``farzi test`` did.
    """
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if "init_args" not in payload:
        raise ValueError(f"{path}: written by an older version (no init_args); re-export it with `farzi fit`")
    summary = build_learner({"class_path": payload["class"], "init_args": payload["init_args"]})
    summary.load_state_dict(payload["state_dict"])
    summary.feed = Feed(**payload["feed"])
    summary.learner_config, summary.recipe = payload["learner"], payload["recipe"]
    return summary.to(map_location)
