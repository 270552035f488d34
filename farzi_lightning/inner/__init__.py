"""Inner optimisers: exact meta-gradients through T steps of training. No Lightning imports here.

``ReverseAdam`` / ``ReverseAdamW`` / ``ReverseSGD`` reverse the trajectory (memory independent of T);
``UnrolledAdam`` / ``UnrolledAdamW`` / ``UnrolledSGD`` keep the whole graph and serve as references. Every one
names the optimiser that trains learners downstream with the same update (``torch_optimizer``).
"""

from .base import DriftError, InnerLoss, InnerOptimizer, MetaGradient, OuterLoss
from .reverse import Adjoint, ForwardOptimizer, ReversibleOptimizer, State
from .reverse_adam import ReverseAdam, ReverseAdamW
from .reverse_sgd import ReverseSGD
from .unrolled import UnrolledAdam, UnrolledAdamW, UnrolledSGD

__all__ = [
    "Adjoint", "DriftError", "ForwardOptimizer", "InnerLoss", "InnerOptimizer", "MetaGradient", "OuterLoss",
    "ReversibleOptimizer", "ReverseAdam", "ReverseAdamW", "ReverseSGD", "State", "UnrolledAdam", "UnrolledAdamW",
    "UnrolledSGD",
]
