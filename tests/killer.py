"""A callback that kills its own process with SIGKILL at a given step (``kill -9``: no handler, no cleanup)."""

import os
import signal

from lightning.pytorch import Callback


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
