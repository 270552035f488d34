"""Inner optimisers: exact meta-gradients through T steps of training. No Lightning imports here.

``ReverseAdam`` / ``ReverseSGD`` reverse the trajectory (memory independent of T); ``UnrolledAdam`` /
``UnrolledSGD`` keep the whole graph and serve as references.
"""

from .base import DriftError, InnerLoss, InnerOptimizer, MetaGradient, OuterLoss
from .reverse import ReversibleOptimizer
from .reverse_adam import ReverseAdam
from .reverse_sgd import ReverseSGD
from .unrolled import UnrolledAdam, UnrolledSGD

__all__ = [
    "DriftError", "InnerLoss", "InnerOptimizer", "MetaGradient", "OuterLoss", "ReversibleOptimizer",
    "ReverseAdam", "ReverseSGD", "UnrolledAdam", "UnrolledSGD",
]
