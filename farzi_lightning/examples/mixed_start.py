"""A new start point: each draw picks one of several start points (e.g. a bank checkpoint or a fresh
initialisation), so the summary is tuned for learners at every stage of training."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from farzi_lightning.context import Context
from farzi_lightning.starts import StartPoint


class MixedStart(StartPoint):
    """Draw one of ``starts`` with probabilities ``weights`` (from the step's generator), then its θ0.

    The contract: ``sample(context, generator)`` (abstract in ``StartPoint``; ``context``: a
    ``farzi_lightning.context.Context``); ``setup(context)`` and ``teacher`` are optional and forwarded.

    Args:
        starts: the start points to mix.
        weights: relative probabilities (None: equal).
    """

    def __init__(self, starts: list[StartPoint], weights: list[float] | None = None) -> None:
        if not starts:
            raise ValueError("MixedStart starts must name at least one start point")
        weights = [1.0] * len(starts) if weights is None else list(weights)
        if len(weights) != len(starts) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"MixedStart weights must be one non-negative number per start, got {weights!r}")
        self.starts, self.weights = list(starts), torch.tensor(weights, dtype=torch.float64)

    def setup(self, context: Context) -> None:
        for start in self.starts:
            start.setup(context)

    def begin_step(self, context: Context, generator: torch.Generator) -> None:
        for start in self.starts:
            start.begin_step(context, generator)

    def teacher(self, map_location: str | torch.device = "cpu") -> nn.Module | None:
        return next((t for s in self.starts if (t := s.teacher(map_location)) is not None), None)

    def sample(self, context: Context, generator: torch.Generator) -> dict[str, Tensor]:
        pick = int(torch.multinomial(self.weights, 1, generator=generator))
        return self.starts[pick].sample(context, generator)
