"""farzi-lightning: autoregressive data distillation (Farzi) on PyTorch Lightning."""

from .downstream import Downstream
from .export import load_summary
from .learner import LearnerModule
from .module import FarziLightningModule
from .trajectories import TrajectoryBank

__all__ = ["Downstream", "FarziLightningModule", "LearnerModule", "TrajectoryBank", "load_summary"]
__version__ = "0.1.0"
