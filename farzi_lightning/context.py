"""``Context``: what a plug-in sees of a distillation — the learner, the summary, how the summary feeds the learner,
the inner optimiser and its batch size, the data and the teacher — instead of the whole ``LightningModule``.

Start points (``farzi_lightning.starts``) and the outer step (``farzi_lightning.outer``) read only this, so they
can be built, called and tested without a Trainer::

    context = Context(learner, summary, Feed("hard"), ReverseAdam(lr=0.01, steps=20), inner_batch_size=10)
    theta0 = SummaryWarmStart(RandomStart(), max_steps=50).sample(context, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .summaries import Feed, Summary


def _no_teacher() -> nn.Module | None:
    return None


@dataclass(eq=False)
class Context:
    """The parts of a distillation a plug-in may read.

    Args:
        learner: the inner learner (its parameters live in the inner optimiser; ``requires_grad`` off).
        summary: the summary being distilled.
        feed: how the summary's distributions become the learner's inputs and targets.
        inner: the inner optimiser (its ``lr``, ``steps`` and ``torch_optimizer``).
        inner_batch_size: summary rows per inner step (0: all).
        data: the data module (``fingerprint``, ``vocab_size``, ``real_sequences()``, loaders); None outside a run.
        teacher: returns the full-data model that labels (loaded on first call), or None.
    """

    learner: nn.Module
    summary: Summary
    feed: Feed = field(default_factory=Feed)
    inner: Any = None
    inner_batch_size: int = 0
    data: Any = None
    teacher: Callable[[], nn.Module | None] = _no_teacher
    _copy: nn.Module | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        """Where the learner lives (and θ0 must be)."""
        return next(itertools.chain(self.learner.parameters(), self.learner.buffers()), torch.empty(0)).device

    def learner_copy(self) -> nn.Module:
        """A trainable copy of the learner (warm starts train it in place; built once)."""
        if self._copy is None:
            self._copy = copy.deepcopy(self.learner).requires_grad_(True)
        return self._copy


__all__ = ["Context"]
