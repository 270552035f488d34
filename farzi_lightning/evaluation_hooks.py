"""The hooks of ``farzi validate``, ``farzi test`` and ``farzi predict`` (a mixin of ``FarziLightningModule``): a
summary's quality is what fresh learners reach on it, so validation and test train them on whole splits
(``Downstream``) rather than scoring batches, and prediction decodes the summary itself. Also the summary's
size line at the start of fit."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader

from .checks import size_line
from .downstream import log_dict, paired_table, table
from .export import decode_rows
from .files import atomic_write


class EvaluationHooks:
    """Validation, test and predict hooks over a distillation's ``summary``, ``feed``, ``learner``, ``inner``,
    ``downstream`` harness and full-data models (``teacher_model()``, ``full_model()``)."""

    def on_fit_start(self) -> None:
        if any(isinstance(c, ModelSummary) for c in self.trainer.callbacks):
            rank_zero_info(self.size_line())

    def size_line(self) -> str:
        """The summary's parameters and its size in tokens as a share of the training data."""
        return size_line(self.summary, self.trainer.datamodule)

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        """Nothing per batch: a summary's quality is what fresh learners reach on it (below)."""

    def on_validation_start(self) -> None:
        """``farzi validate``: the downstream evaluation on the validation split (during fit the
        ``DownstreamEvaluation`` callback does this)."""
        if self.trainer.state.fn == TrainerFn.VALIDATING:
            self.results = self.evaluate_downstream("valid")
            rank_zero_info("Downstream evaluation on the validation split:\n" + table(self.results))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.state.fn == TrainerFn.VALIDATING and self.results:
            self.log_dict(log_dict(self.results))

    # ---- farzi predict: the summary decoded ----

    def predict_dataloader(self) -> DataLoader:
        """The summary's row indices (a data module defines no predict split: the summary is the prediction)."""
        return DataLoader(torch.arange(self.summary.num_sequences), batch_size=64)

    def on_predict_start(self) -> None:
        self._decoded = self.summary.decode()  # (n, L) argmax ids, as summary.txt: once, not per batch

    def predict_step(self, batch: Tensor, batch_idx: int) -> list[str]:
        """The rows at ``batch`` decoded in the data's own names."""
        return decode_rows(self.trainer.datamodule, self._decoded[batch.to(self._decoded.device)])

    def on_predict_epoch_end(self) -> None:
        rows = [row for batch in self.trainer.predict_loop.predictions for row in batch]
        root = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        if self.trainer.is_global_zero:
            atomic_write(root / "predictions.txt", lambda f: f.write(("\n".join(rows) + "\n").encode()))
            rank_zero_info(f"{len(rows)} summary rows decoded into {root / 'predictions.txt'}; the first:\n"
                           + "\n".join(rows[:5]))

    # ---- downstream evaluation (farzi test) ----

    def evaluate_downstream(self, split: str, candidates: list[str] | None = None, data=None,
                            learners: list[str] | None = None) -> dict:
        """Fresh learners trained on the summary (and the harness's other candidates), scored on ``split``; every
        process must call it (the jobs are shared out over the processes and the results gathered on all).
        ``data``: a data module to score on outside a Trainer (studies); None: the trainer's. ``learners``: only
        these of the harness's learners, by name (``Downstream.learner_configs``); None: all."""
        self._sync_inner_lr()
        self._bound_data = data
        try:
            attached = self._trainer is not None
            return self.downstream.evaluate(
                summary=self.summary, feed=self.feed, learner=self.learner, inner=self.inner,
                inner_batch_size=self.hparams.inner_batch_size, data=self._data(), split=split,
                teacher=self.teacher_model(), full=self.full_model(), candidates=candidates, device=self.device,
                progress=rank_zero_info, rank=self.global_rank, world_size=self.trainer.world_size if attached else 1,
                reduce=lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"), learners=learners)
        finally:
            self._bound_data = None

    def _data(self):
        """The data module: the one handed to ``evaluate_downstream``, else the trainer's."""
        bound = getattr(self, "_bound_data", None)
        return bound if bound is not None else self.trainer.datamodule

    def on_test_start(self) -> None:
        """Train fresh learners on every candidate before the test batches arrive (outside inference mode)."""
        self.results = self.evaluate_downstream("test")
        rank_zero_info("Downstream evaluation on the test split (test metric at the best validation point):\n"
                       + table(self.results) + "\n\n" + paired_table(self.results))

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        """Nothing per batch: the harness scores whole splits itself."""

    def on_test_epoch_end(self) -> None:
        self.log_dict(log_dict(self.results))
