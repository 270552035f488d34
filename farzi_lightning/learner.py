"""``LearnerModule``: trains any learner on real data and evaluates it (full-data baseline, trajectories).

    farzi fit --config configs/ml100k_pretrain.yaml     # then: farzi test --config ... --ckpt_path best
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from .checkpoints import VerifiedLoad
from .data.windows import IGNORE_INDEX
from .metrics import NDCG, HitRate, Perplexity


def next_token_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean next-token cross-entropy; ``target`` ids (``IGNORE_INDEX`` skipped) or soft ``(..., V)`` targets."""
    if target.is_floating_point():
        return -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX)


class Evaluator(nn.Module):
    """Real-data metrics for one split: perplexity for text batches ``(x, y)``, HR/nDCG@k for
    recommendation batches ``(history, target, seen)``. Args: k, exclude_seen, sync (gather the sums across
    DDP ranks on ``compute``; False for evaluations that run on one rank only, which a gather would hang)."""

    def __init__(self, k: int = 10, exclude_seen: bool = True, sync: bool = True) -> None:
        super().__init__()
        self.k, self.exclude_seen = k, exclude_seen
        kwargs = {"sync_on_compute": sync}
        self.ppl, self.hr, self.ndcg = Perplexity(**kwargs), HitRate(k, **kwargs), NDCG(k, **kwargs)

    def update(self, learner: nn.Module, batch: tuple[Tensor, ...]) -> None:
        if len(batch) == 2:  # language modelling
            x, y = batch
            self.ppl.update(learner(x), y)
            return
        history, target, seen = batch
        scores = learner(history)[:, -1]  # (B, V): next-item scores after the whole history
        exclude = seen.clone() if self.exclude_seen else torch.zeros_like(seen)
        exclude[:, 0] = True  # padding is never a candidate
        self.hr.update(scores, target, exclude)
        self.ndcg.update(scores, target, exclude)

    def compute(self, prefix: str) -> dict[str, Tensor]:
        out = {}
        if self.ppl.update_count:
            out[f"{prefix}/ppl"] = self.ppl.compute()
        if self.hr.update_count:
            out[f"{prefix}/hr@{self.k}"] = self.hr.compute()
            out[f"{prefix}/ndcg@{self.k}"] = self.ndcg.compute()
        for metric in (self.ppl, self.hr, self.ndcg):
            metric.reset()
        return out


class LearnerModule(VerifiedLoad, LightningModule):
    """Trains ``learner`` on real data with next-token cross-entropy; validates and tests with full metrics.

    Args:
        learner: the model (``TransformerLM``, ``RNNLM``, ``SASRec`` or any module mapping ids to logits).
        optimizer: optimiser factory, e.g. ``torch.optim.Adam`` with its init_args in YAML.
        lr_scheduler: optional scheduler factory (stepped every epoch).
        k: cut-off of HR@k / nDCG@k.
        exclude_seen: leave items the user already interacted with out of the ranking.
    """

    def __init__(self, learner: nn.Module, optimizer: OptimizerCallable = torch.optim.Adam,
                 lr_scheduler: LRSchedulerCallable | None = None, k: int = 10, exclude_seen: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["learner"])
        self.learner = learner
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.evaluators = nn.ModuleDict({"val": Evaluator(k, exclude_seen), "test": Evaluator(k, exclude_seen)})

    def forward(self, tokens: Tensor) -> Tensor:
        return self.learner(tokens)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = next_token_loss(self.learner(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.evaluators["val"].update(self.learner, batch)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.evaluators["val"].compute("val"), prog_bar=True, sync_dist=False)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.evaluators["test"].update(self.learner, batch)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.evaluators["test"].compute("test"))

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler(optimizer)}
