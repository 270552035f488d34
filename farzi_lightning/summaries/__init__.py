"""Summary parameterisations: the distilled data as ``nn.Module`` parameters (or fixed real baselines)."""

from .base import Summary
from .latent import LatentSummary
from .sampling import HeadSampleSummary, RandomSampleSummary
from .token import TokenSummary

__all__ = ["HeadSampleSummary", "LatentSummary", "RandomSampleSummary", "Summary", "TokenSummary"]
