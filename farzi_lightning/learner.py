"""``LearnerModule``: trains any learner on real data and evaluates it (full-data baseline, trajectories).

    farzi fit --config configs/ml100k_pretrain.yaml     # then: farzi test --config ... --ckpt_path best
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from . import seeds
from .checkpoints import VerifiedLoad, save_config
from .contracts import check_lengths
from .learners import Learner
from .metrics import Evaluator, next_token_loss


class LearnerModule(VerifiedLoad, LightningModule):
    """Trains ``learner`` on real data with next-token cross-entropy; validates and tests with full metrics.

    Args:
        learner: the model (``TransformerLM``, ``RNNLM``, ``SASRec`` or any module mapping ids to logits).
        optimizer: optimiser factory, e.g. ``torch.optim.Adam`` with its init_args in YAML.
        lr_scheduler: optional scheduler factory (stepped every epoch).
        k: cut-off of HR@k / nDCG@k.
        exclude_seen: leave items the user already interacted with out of the ranking.
    """

    def __init__(self, learner: Learner, optimizer: OptimizerCallable = torch.optim.Adam,
                 lr_scheduler: LRSchedulerCallable | None = None, k: int = 10, exclude_seen: bool = True) -> None:
        super().__init__()
        save_config(self)
        self.learner = learner
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.evaluators = nn.ModuleDict({"val": Evaluator(k, exclude_seen), "test": Evaluator(k, exclude_seen)})

    def setup(self, stage: str) -> None:
        if self.trainer.datamodule is not None:
            check_lengths(self.trainer.datamodule, self.learner)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.learner(tokens)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        torch.manual_seed(seeds.training_step(self.global_step, self.global_rank))  # dropout: resumable exactly
        x, y = batch
        loss = next_token_loss(self.learner(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.evaluators["val"].update(self.learner, batch)

    def on_validation_epoch_end(self) -> None:
        metrics = self.evaluators["val"].compute("val")
        self.log_dict(metrics, prog_bar=True, sync_dist=False)
        # TensorBoard's HPARAMS tab compares runs by hp_metric: the validation nDCG@k, or perplexity for text.
        key = next((k for k in metrics if "ndcg" in k), next(iter(metrics), None))
        if key is not None:
            self.log("hp_metric", metrics[key], sync_dist=False)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.evaluators["test"].update(self.learner, batch)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.evaluators["test"].compute("test"))

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler(optimizer)}
