"""Lightning callbacks of farzi-lightning (installed as ``farzi_lightning.callbacks``)."""

from .downstream import DownstreamEvaluation
from .monitor import SummaryMonitor
from .trajectory import TrajectoryCheckpoint

__all__ = ["DownstreamEvaluation", "SummaryMonitor", "TrajectoryCheckpoint"]
