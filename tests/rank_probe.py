"""A callback for the DDP test: each rank writes a digest of its summary and meta-gradient after every step."""

from __future__ import annotations

import json
import os

from lightning.pytorch import Callback


class RankProbe(Callback):
    """Appends ``{"step", "summary", "grad"}`` sums to ``$FARZI_PROBE_DIR/rank<r>.jsonl``."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        params = list(pl_module.summary.parameters())
        record = {"step": trainer.global_step, "summary": [float(p.double().sum()) for p in params],
                  "grad": [float(p.grad.double().abs().sum()) for p in params if p.grad is not None]}
        path = os.path.join(os.environ["FARZI_PROBE_DIR"], f"rank{trainer.global_rank}.jsonl")
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
