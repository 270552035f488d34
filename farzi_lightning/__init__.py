"""farzi-lightning: autoregressive data distillation (Farzi) on PyTorch Lightning."""

from .learner import LearnerModule
from .module import FarziLightningModule
from .trajectories import TrajectoryBank

__all__ = ["FarziLightningModule", "LearnerModule", "TrajectoryBank"]
__version__ = "0.1.0"
