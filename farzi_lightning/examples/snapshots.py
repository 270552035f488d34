"""A new callback: keep a ``summary.pt`` snapshot every n outer steps, to compare summaries along a run
(each loads with ``farzi_lightning.load_summary``)."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from farzi_lightning.export import export_dir, save_summary, summary_payload


class SummarySnapshots(Callback):
    """Writes ``<checkpoint dir>/snapshots/summary-<step>.pt`` every ``every_n_steps`` outer steps (rank zero).

    Args:
        every_n_steps: outer steps between snapshots.
    """

    def __init__(self, every_n_steps: int = 10) -> None:
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"SummarySnapshots every_n_steps must be an integer >= 1, got {every_n_steps!r}")
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or not trainer.is_global_zero:
            return
        payload = summary_payload(pl_module.summary, trainer.datamodule.vocabulary(), pl_module.feed,
                                  pl_module.learner)
        save_summary(Path(export_dir(trainer)) / "snapshots" / f"summary-{step:06d}.pt", payload)
