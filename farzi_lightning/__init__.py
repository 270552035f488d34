"""farzi-lightning: autoregressive data distillation (Farzi) on PyTorch Lightning."""

from .learner import LearnerModule
from .trajectories import TrajectoryBank

__all__ = ["LearnerModule", "TrajectoryBank"]
__version__ = "0.1.0"
