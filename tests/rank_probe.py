"""A callback for the DDP test: each rank saves its summary and meta-gradient after every outer step."""

from __future__ import annotations

import os

import torch
from lightning.pytorch import Callback


class RankProbe(Callback):
    """Saves ``{"summary": [...], "grad": [...]}`` to ``$FARZI_PROBE_DIR/rank<r>-step<s>.pt``."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        params = list(pl_module.summary.parameters())
        record = {"summary": [p.detach().clone() for p in params], "grad": [p.grad.clone() for p in params]}
        torch.save(record, os.path.join(os.environ["FARZI_PROBE_DIR"],
                                        f"rank{trainer.global_rank}-step{trainer.global_step}.pt"))
