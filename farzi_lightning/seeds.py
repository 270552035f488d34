"""Every random stream of the package, derived in one place from the run's seed.

The run's seed is ``PL_GLOBAL_SEED`` (``seed_everything`` sets it; 0 when unset). Each stream is a fresh
``torch.Generator`` seeded from (seed, purpose, step, index) alone, never from the global RNG, so a resumed run,
a DDP run and a run with callbacks on or off draw exactly what an uninterrupted single-process run draws.

Streams (name: seed → what draws from it):

- ``outer_step(step, draw)``: ``seed·7919 + step·104729 + draw·31`` → one draw of an outer step: its start
  point θ0, inner order and real batch (``draw`` = rank · meta_batch_size + j);
- ``epoch_order(epoch)``: ``seed·1000003 + epoch`` → an epoch's permutation of training rows (``EpochSampler``);
- ``summary_init()``: ``seed`` → the rows a learnable summary starts from;
- ``training_step(step, rank)``: ``seed·15485863 + step·7 + rank·1000003`` → the global RNG at each step of a
  pretrain (``LearnerModule``: its dropout), so a resumed pretrain draws what an uninterrupted one draws;
- ``downstream(seed)``: the job's seed (with ``torch.manual_seed(seed)`` for the fresh learner) → a downstream
  job's baseline draw and order of rows; ``RandomStart`` seeds its fresh learner from its draw's stream.

The multipliers are primes, so the streams of nearby (step, draw) pairs do not coincide. They are part of the
recorded results: changing them changes every figure, so they stay as they are.
"""

from __future__ import annotations

import os

import torch

SEED_VAR = "PL_GLOBAL_SEED"


def global_seed() -> int:
    """The run's seed (``seed_everything``'s), 0 when none was set."""
    return int(os.environ.get(SEED_VAR, 0))


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def outer_step(step: int, draw: int, seed: int | None = None) -> torch.Generator:
    """The stream of one draw of outer step ``step``."""
    seed = global_seed() if seed is None else seed
    return generator(seed * 7_919 + step * 104_729 + draw * 31)


def epoch_order(epoch: int, seed: int | None = None) -> torch.Generator:
    """The stream of an epoch's permutation of training rows."""
    seed = global_seed() if seed is None else seed
    return generator(seed * 1_000_003 + epoch)


def summary_init(seed: int | None = None) -> torch.Generator:
    """The stream that picks the rows a learnable summary starts from."""
    return generator(global_seed() if seed is None else seed)


def downstream(seed: int) -> torch.Generator:
    """The stream of downstream job ``seed`` (its baseline draw and its order of rows)."""
    return generator(seed)


def training_step(step: int, rank: int = 0, seed: int | None = None) -> int:
    """The seed of the global RNG at pretrain step ``step`` on process ``rank``."""
    seed = global_seed() if seed is None else seed
    return seed * 15_485_863 + step * 7 + rank * 1_000_003
