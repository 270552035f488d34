"""``EveryNSteps``: the schedule the monitoring callbacks share."""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer


class EveryNSteps(Callback):
    """Calls ``run(trainer, module)`` at the start of fit, after every ``every_n_steps``-th outer step and at the
    end of fit, at most once per step (the end of fit can fall on an every-n step). Subclasses implement ``run``.

    Args:
        every_n_steps: outer steps between runs.
    """

    def __init__(self, every_n_steps: int) -> None:
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"{type(self).__name__} every_n_steps must be an integer >= 1, got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self._ran_at: int | None = None

    def run(self, trainer: Trainer, module: LightningModule) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement run(trainer, module)")

    def _maybe_run(self, trainer: Trainer, module: LightningModule) -> None:
        if self._ran_at != trainer.global_step:
            self._ran_at = trainer.global_step
            self.run(trainer, module)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step == 0:
            self._maybe_run(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._maybe_run(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._maybe_run(trainer, pl_module)
