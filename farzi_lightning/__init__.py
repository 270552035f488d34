"""farzi-lightning: autoregressive data distillation (Farzi) on PyTorch Lightning."""

from .downstream import Downstream
from .export import load_summary
from .learner import LearnerModule
from .module import FarziLightningModule
from .teacher import Teacher, TeacherModel
from .trajectories import TrajectoryBank

__all__ = ["Downstream", "FarziLightningModule", "LearnerModule", "Teacher", "TeacherModel", "TrajectoryBank",
           "load_summary"]
__version__ = "0.1.0"
