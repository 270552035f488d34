"""Writing a summary for people and other trainers: ``summary.pt`` and ``summary.txt`` next to the checkpoints."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from lightning.pytorch import Trainer

from .summaries import Summary
from .trajectories import atomic_write


def export_dir(trainer: Trainer) -> Path:
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir)


def export_summary(summary: Summary, trainer: Trainer) -> Path:
    """Save decoded ids, soft tokens' parameters and the vocabulary; returns the ``summary.pt`` path.

    ``summary.pt`` loads with ``torch.load(path, weights_only=True)``:
    ``{"tokens": (n, L) int64, "state_dict": {...}, "vocabulary": [str, ...], "class": str}``.
    """
    data = trainer.datamodule
    vocabulary = data.vocabulary() if hasattr(data, "vocabulary") else [str(i) for i in range(summary.vocab_size)]
    tokens = summary.decode().cpu()
    payload = {"tokens": tokens, "state_dict": {k: v.detach().cpu() for k, v in summary.state_dict().items()},
               "vocabulary": vocabulary, "class": f"{type(summary).__module__}.{type(summary).__qualname__}"}
    root = export_dir(trainer)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(root / "summary.pt", lambda f: f.write(buffer.getvalue()))
    lines = [" ".join(vocabulary[int(i)] for i in row) for row in tokens]
    atomic_write(root / "summary.txt", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    return root / "summary.pt"
