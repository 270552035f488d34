"""``DownstreamEvaluation``: how fresh learners trained on the summary are doing, while the distillation runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer

from farzi_lightning.downstream import log_dict
from farzi_lightning.files import atomic_write

from .schedule import EveryNSteps


class DownstreamEvaluation(EveryNSteps):
    """Every ``every_n_steps`` outer steps (and at the start and end of fit) trains fresh learners on the summary
    with the module's ``Downstream`` harness and logs ``downstream/<learner>/<candidate>/<metric>`` on the
    validation split. Baselines are computed once. The harness forks every RNG it touches, so the
    distillation's trajectory (and exact resume) is the same with the callback on or off. Each entry of
    ``history`` also records what the distillation has cost so far, evaluations excluded and carried across a
    resume: ``fit_seconds`` (wall) and ``cpu_seconds`` (this process's CPU time, every thread), the x axis of
    a time-to-quality curve.

    Args:
        every_n_steps: outer steps between evaluations.
        candidates: what to evaluate (None: the harness's own list).
        results_file: optional JSON file rewritten after each evaluation with every evaluation so far.
    """

    def __init__(self, every_n_steps: int = 50, candidates: list[str] | None = None,
                 results_file: str | None = None) -> None:
        super().__init__(every_n_steps)
        self.candidates, self.results_file = candidates, results_file
        self.history: list[dict] = []
        self.spent = {"fit_seconds": 0.0, "cpu_seconds": 0.0}  # outer steps only
        self._clock: tuple[float, float] | None = None

    def state_dict(self) -> dict:
        return {"history": self.history, "spent": dict(self.spent)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
        self.spent.update(state_dict.get("spent", {}))

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx) -> None:
        self._clock = (time.perf_counter(), time.process_time())

    def run(self, trainer: Trainer, module: LightningModule) -> None:
        """On every process (the harness shares the jobs out and gathers the results); rank zero writes."""
        step = trainer.global_step
        if any(h["step"] == step for h in self.history):  # evaluated before an interruption: resumed here
            return
        results = module.evaluate_downstream("valid", self.candidates)
        metrics = log_dict(results)
        self.history.append({"step": step, **{k: round(v, 3) for k, v in self.spent.items()}, "metrics": metrics,
                             "scores": {f"{learner}/{c}": s.as_dict() for (learner, c), s in results.items()}})
        if not trainer.is_global_zero:
            return
        last = self.last()
        if last is not None:  # TensorBoard's HPARAMS tab compares runs by hp_metric
            metrics = {**metrics, "hp_metric": last[1]}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if self.results_file:
            text = json.dumps(self.history, indent=1)
            atomic_write(Path(self.results_file), lambda f: f.write(text.encode()))

    def last(self) -> tuple[str, float] | None:
        """The progress bar's entry: the distillation learner's summary metric at the last evaluation."""
        if not self.history:
            return None
        for name, value in self.history[-1]["metrics"].items():
            if "/summary/" in name and not name.endswith("_std") and "/hr@" not in name:
                return name.rpartition("/")[2], value
        return None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        if self._clock is not None:  # before the evaluation this step may run
            self.spent["fit_seconds"] += time.perf_counter() - self._clock[0]
            self.spent["cpu_seconds"] += time.process_time() - self._clock[1]
            self._clock = None
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        last = self.last()
        if last is not None:  # the same on every process: no sync needed
            pl_module.log(f"valid_{last[0]}", last[1], prog_bar=True, logger=False)
