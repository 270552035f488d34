"""Start points θ0 of an outer step, as plug-in components (``model.init_args.start`` in YAML).

- ``TrajectoryStart``: a checkpoint drawn from a trajectory bank, within a window of its run (Farzi's Ω).
- ``RandomStart``: a fresh initialisation of the learner each outer step (what a summary is used for).
- ``SummaryWarmStart``: another start point, then k ~ U[0, K] plain optimiser steps on the current summary
  without a graph, before the T differentiated ones: random-truncated backpropagation through time, so the
  outer loop sees every stage of training on the summary while differentiating only a window of it.

A new start point subclasses ``StartPoint`` and implements ``sample(context, generator)``; it sees the run through a
``Context`` (``farzi_lightning.context``), never the LightningModule. Every draw comes from the ``generator`` the
outer step passes (a function of seed, outer step and draw), so resume is exact.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from .bilevel import inner_schedule, make_optimizer, train_steps
from .context import Context
from .learners import build_learner
from .parts import RecordsInit
from .trajectories import TrajectoryBank


class StartPoint(RecordsInit, ABC):
    """Base class: ``sample(context, generator) -> {name: tensor}``, the learner's parameters θ0. A start point
    reads only the ``Context`` (learner, summary, feed, inner optimiser, data, teacher)."""

    def setup(self, context: Context) -> None:  # noqa: B027 (optional hook: nothing by default)
        """Called once the run has its data (``context.data``): load banks, check them against the data."""

    def begin_step(self, context: Context, generator: torch.Generator) -> None:  # noqa: B027 (optional hook)
        """Called once per outer step before its draws, with the step's shared stream (the same on every
        process): what all the step's draws should share is drawn here."""

    @abstractmethod
    def sample(self, context: Context, generator: torch.Generator) -> dict[str, Tensor]:
        """θ0 for one outer step, on ``context.device``; draw randomness from ``generator`` only."""

    def teacher(self, map_location: str | torch.device = "cpu") -> nn.Module | None:
        """A full-data model this start point knows of (None: none)."""
        return None


def like_learner(context: Context, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` on the context's device and in its learner's dtypes (a float64 run, ``64-true``, reads float32
    bank checkpoints and fresh initialisations in float64)."""
    ref = context.learner.state_dict()
    return {k: v.detach().to(device=context.device, dtype=ref[k].dtype if k in ref else v.dtype)
            for k, v in state.items()}


class TrajectoryStart(StartPoint):
    """A checkpoint drawn uniformly from a trajectory bank, restricted to a window of its run.

    Args:
        path: the bank directory (written by ``TrajectoryCheckpoint`` during full-data training).
        min_fraction: sample checkpoints from at least this fraction of their run.
        max_fraction: ... and at most this fraction (e.g. 0.3: the first 30% of training).
        include_init: whether the runs' step-0 checkpoints may be sampled.
    """

    def __init__(self, path: str, min_fraction: float = 0.0, max_fraction: float = 1.0,
                 include_init: bool = True) -> None:
        self.path, self.include_init = path, include_init
        self.min_fraction, self.max_fraction = min_fraction, max_fraction
        self.bank: TrajectoryBank | None = None

    def setup(self, context: Context) -> None:
        data = context.data
        try:
            self.bank = TrajectoryBank(self.path, fingerprint=data.fingerprint,
                                       vocab_size=data.vocab_size, min_fraction=self.min_fraction,
                                       max_fraction=self.max_fraction, include_init=self.include_init)
            self.bank.check_compatible(context.learner)
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"model.init_args.start (TrajectoryStart path={self.path}): {err}") from err

    def sample(self, context: Context, generator: torch.Generator) -> dict[str, Tensor]:
        return like_learner(context, self.bank.sample(generator, map_location=context.device))

    def teacher(self, map_location: str | torch.device = "cpu") -> nn.Module | None:
        return TrajectoryBank(self.path).model(map_location=map_location)


class RandomStart(StartPoint):
    """A fresh initialisation of the learner every outer step (drawn from the step's generator)."""

    def sample(self, context: Context, generator: torch.Generator) -> dict[str, Tensor]:
        seed = int(torch.randint(2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = build_learner(context.learner.config())
        return like_learner(context, fresh.state_dict())


class SummaryWarmStart(StartPoint):
    """``start``, then k ~ U[0, max_steps] plain steps on the current summary (no graph), with the ``torch.optim``
    twin of the inner optimiser, the inner batch size and the context's ``Feed``. The inner optimiser then
    starts from the result with fresh moments. With ``max_steps=0`` it is exactly ``start``.

    Args:
        start: the start point to warm (e.g. ``RandomStart``).
        max_steps: K, the largest number of warm-up steps.
        share_steps: every draw of an outer step (on every process) warms up for the same k, drawn from the
            step's shared stream (common random numbers: the warm-up length, the largest source of variance
            between draws, then cancels out of the step's mean).
    """

    def __init__(self, start: StartPoint, max_steps: int = 100, share_steps: bool = False) -> None:
        if not isinstance(max_steps, int) or max_steps < 0:
            raise ValueError(f"SummaryWarmStart max_steps must be an integer >= 0, got {max_steps!r}")
        self.start, self.max_steps, self.share_steps = start, max_steps, share_steps
        self.shared: int | None = None

    def setup(self, context: Context) -> None:
        self.start.setup(context)

    def begin_step(self, context: Context, generator: torch.Generator) -> None:
        self.start.begin_step(context, generator)
        if self.share_steps:
            self.shared = int(torch.randint(self.max_steps + 1, (1,), generator=generator))

    def teacher(self, map_location: str | torch.device = "cpu") -> nn.Module | None:
        return self.start.teacher(map_location)

    def sample(self, context: Context, generator: torch.Generator) -> dict[str, Tensor]:
        theta = self.start.sample(context, generator)
        if self.share_steps and self.shared is None:
            raise RuntimeError("SummaryWarmStart(share_steps=True) samples after begin_step (OuterStep calls it)")
        steps = self.shared if self.share_steps else int(torch.randint(self.max_steps + 1, (1,), generator=generator))
        if steps == 0:
            return theta
        learner = context.learner_copy()
        learner.load_state_dict(theta)
        learner.eval()  # as in the inner loop
        summary = context.summary
        schedule = inner_schedule(summary.num_sequences, context.inner_batch_size, steps, generator)
        with torch.no_grad():
            rows, weights = summary().detach(), summary.weights()  # (n, L, V), (n,) or None
        with torch.enable_grad():
            train_steps(learner, rows, context.feed, make_optimizer(context.inner, learner.parameters()),
                        schedule.to(rows.device), ids=summary.input_ids(),
                        weights=None if weights is None else weights.detach())
        return {k: v.detach().clone() for k, v in learner.state_dict().items()}
