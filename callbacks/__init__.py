"""Lightning callbacks of farzi-lightning (installed as ``farzi_lightning.callbacks``)."""

from .trajectory import TrajectoryCheckpoint

__all__ = ["TrajectoryCheckpoint"]
