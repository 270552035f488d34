"""Summary parameterisations: the distilled data as ``nn.Module`` parameters (or fixed real baselines), and
``Feed``: how a summary's distributions become a learner's inputs and targets."""

from .base import Summary
from .feed import Feed
from .latent import LatentSummary
from .learnable import LearnableSummary
from .sampling import BASELINES, HeadSampleSummary, RandomSampleSummary, TeacherSampleSummary, make_baseline
from .token import TokenSummary

__all__ = ["BASELINES", "Feed", "HeadSampleSummary", "LatentSummary", "RandomSampleSummary", "Summary",
           "TeacherSampleSummary", "TokenSummary", "LearnableSummary", "make_baseline"]
