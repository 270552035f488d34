"""``FarziLightningModule``: distil a data set into a summary by exact meta-gradients (manual optimisation).

    farzi fit --config configs/ml100k.yaml        # distil; watch it with `tensorboard --logdir runs`
    farzi test --config configs/ml100k.yaml --ckpt_path <ckpt>   # fresh learners trained on the summary

One outer step: draw θ0 from the start point, train the learner for T inner steps on the summary with the
inner optimiser, take its loss on a real batch, and step the summary along the exact meta-gradient.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from . import seeds
from .checkpoints import VerifiedLoad, save_config
from .checks import check_arguments, check_parts, check_size, make_optimizers
from .context import Context
from .contracts import DATA, check_lengths, require
from .distributed import check_precision, check_strategy
from .downstream import Downstream
from .evaluation_hooks import EvaluationHooks
from .export import export_dir, export_summary
from .inner import InnerOptimizer
from .learners import Learner
from .outer import OuterStep, RelativeClip, StepResult, clip_limit, nonfinite_stop, real_batch, step_metrics
from .outer_losses import OuterLoss
from .starts import RandomStart, StartPoint
from .summaries import Feed, Summary
from .summaries.feed import InputMode
from .teacher import FullDataModels, Teacher, as_teacher

SummaryCallable = Callable[[int], Summary]

# Lightning's ModelCheckpoint asks manual-optimisation modules to stash pre-step weights; a distillation's
# checkpoint is meant to hold the state after the step (exact resume), so the notice is noise here.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
# Raised inside Lightning's own pytree helper on torch >= 2.9; nothing a user of this package can change.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class FarziLightningModule(VerifiedLoad, EvaluationHooks, LightningModule):
    """Farzi distillation under Lightning manual optimisation.

    Args:
        learner: the model trained in the inner loop (its vocabulary is linked from the data).
        summary: summary factory, e.g. ``LatentSummary`` with init_args; called with the vocabulary size.
        inner_optimizer: ``ReverseAdam``, ``ReverseSGD`` or an unrolled reference; sets T.
        start: where each outer step's θ0 comes from (``TrajectoryStart``, ``RandomStart``,
            ``SummaryWarmStart``); None: ``RandomStart``.
        input_mode: how the summary feeds the learner, in the inner loop and downstream: ``soft``, ``hard``
            or ``straight_through`` (targets are always the soft distributions).
        input_temperature: temperature of soft inputs.
        target_temperature: temperature of the soft targets.
        teacher: the full-data model(s) that label ``init: teacher`` and the ``teacher`` candidate: a trajectory
            bank directory (its best-validation checkpoint) or a ``farzi_lightning.Teacher`` (any checkpoint of
            one or more banks, a temperature, an ensemble); its first bank's best checkpoint is the ``full``
            reference. None: the start point's bank, if any.
        inner_batch_size: summary sequences per inner step (0: all).
        optimizer: the outer optimiser over the summary's parameters.
        lr_scheduler: optional schedule of the outer learning rate, stepped every outer step.
        gradient_clip_val: clip the meta-gradient's total norm to this (None: no clipping). Lightning's own
            ``trainer.gradient_clip_val`` is refused under manual optimisation, so the module takes it.
        gradient_clip_relative: also clip at this multiple of a running average of the norm (``RelativeClip``).
        outer_loss: what the summary is optimised for on real data (``farzi_lightning.outer_losses``:
            ``NextToken``, the default; ``TeacherKL``; ``Weighted`` sums).
        outer_batch_size: real sequences per draw for the outer loss (None: the data's batch size; 0: all).
        share_real_batch: all draws of an outer step meet one real batch (common random numbers).
        learn_inner_lr: also learn the inner learning rate: its log is a parameter stepped by the outer
            optimiser along the exact meta-gradient (the reverse optimisers return ``lr_grad``); downstream
            training then uses the learnt rate.
        meta_batch_size: start points drawn per outer step on each process; the summary steps along the mean of
            their meta-gradients, and under DDP the mean over every process's draws (N processes with
            ``meta_batch_size`` m equal one process with N·m).
        batch_draws: run those draws as one stacked trajectory (one batched forward per inner step): the same
            meta-gradient, cheaper for small learners (``OuterStep``).
        max_nonfinite_steps: an outer step whose meta-gradient or loss is NaN/Inf leaves the summary untouched
            (counted in ``train/skipped_steps``); this many in a row save ``nonfinite.ckpt`` and stop the fit.
        downstream: the downstream-evaluation harness of ``farzi test`` and the ``DownstreamEvaluation``
            callback (None: ``Downstream()`` defaults).
        summary_top_k: ``summary.pt`` keeps each position's k most likely tokens (renormalised) instead of all
            V (None: every probability, exact); a latent summary is stored as its factors either way.
        summary_rank: ``summary.pt`` keeps rank-r factors and a bias fitted in KL, not all V per position
            (None: see ``summary_top_k``); exact when a teacher of width below r made the targets.
        summary_bits: bits per stored factor of ``summary_rank``: 16 (float16) or 8 (int8 with a scale per
            position and per token: twice the rank in the same bytes).
    """

    def __init__(self, learner: Learner, summary: SummaryCallable, inner_optimizer: InnerOptimizer,
                 start: StartPoint | None = None, input_mode: InputMode = "soft", input_temperature: float = 1.0,
                 target_temperature: float = 1.0, teacher: str | Teacher | None = None, inner_batch_size: int = 0,
                 optimizer: OptimizerCallable = torch.optim.Adam, lr_scheduler: LRSchedulerCallable | None = None,
                 gradient_clip_val: float | None = None, learn_inner_lr: bool = False, meta_batch_size: int = 1,
                 max_nonfinite_steps: int = 5, downstream: Downstream | None = None,
                 summary_top_k: int | None = None, summary_rank: int | None = None,
                 gradient_clip_relative: float | None = None, outer_loss: OuterLoss | None = None,
                 outer_batch_size: int | None = None, share_real_batch: bool = False, summary_bits: int = 16,
                 batch_draws: bool = False) -> None:
        super().__init__()
        save_config(self)
        self.automatic_optimization = False
        check_parts(learner, None)
        self.learner = learner.requires_grad_(False)  # θ lives in the inner optimiser, not in DDP or .grad
        self.summary = summary(learner.vocab_size)
        check_parts(learner, self.summary)
        check_arguments(self.summary, meta_batch_size, max_nonfinite_steps, inner_batch_size, summary_top_k,
                        summary_rank, gradient_clip_val, gradient_clip_relative, outer_batch_size, summary_bits)
        self.nonfinite_streak = self.skipped_steps = 0
        try:
            self.feed = Feed(input_mode, input_temperature, target_temperature)
        except ValueError as err:
            raise ValueError(f"model.init_args.{err}") from err
        self.inner = inner_optimizer
        # log lr, not lr: steps of the outer optimiser are relative changes and the rate stays positive.
        self.log_inner_lr = nn.Parameter(torch.tensor(math.log(inner_optimizer.lr)), requires_grad=learn_inner_lr)
        self.start = start if start is not None else RandomStart()
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.downstream = downstream if downstream is not None else Downstream()
        self.teacher_spec = as_teacher(teacher)
        self.models = FullDataModels(self.teacher_spec, self.start, self.summary.seq_len)  # not in checkpoints
        self.results: dict = {}
        # What plug-ins see (start points, the outer step), rather than this module.
        self.context = Context(self.learner, self.summary, self.feed, self.inner, inner_batch_size,
                               teacher=self.teacher_model)
        self.outer_step = OuterStep(self.context, self.start, meta_batch_size,
                                    self.log_inner_lr if learn_inner_lr else None, outer_loss, share_real_batch,
                                    batch_draws)
        self.relative_clip = RelativeClip(gradient_clip_relative) if gradient_clip_relative else None

    # ---- setup ----

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        require(data, DATA, "distillation data", "data")
        check_lengths(data, self.learner)
        check_strategy(self.trainer.strategy)
        check_precision(self.trainer.precision, self.device)
        self.context.data = data
        self.start.setup(self.context)
        if self.teacher_spec is not None:
            self.teacher_model()  # a bank made on other data fails here, before any training
        if stage == "fit" and isinstance(self.start, RandomStart):
            rank_zero_info("FarziLightningModule: every outer step starts from a fresh initialisation (RandomStart)")
        if stage == "fit":
            self._real = data.train_dataloader()
            if self.trainer.ckpt_path is None and self.global_step == 0:
                # The same on every rank (no rank in the seed): DDP also broadcasts rank 0's parameters.
                teacher = self.teacher_model() if getattr(self.summary, "init", None) == "teacher" else None
                real = data.real_sequences()
                check_size(self.summary, real)
                self.summary.initialize(real.to(self.device), seeds.summary_init(), teacher)

    def teacher_model(self) -> nn.Module | None:
        """The model that labels (``teacher``, else the start point's full-data model), loaded once."""
        return self.models.teacher(self._data(), self.device)

    def full_model(self) -> nn.Module | None:
        """The ``full`` reference (the teacher's first bank's best checkpoint, else the start point's model)."""
        return self.models.full(self._data(), self.device)

    def _sync_inner_lr(self) -> None:
        """The inner optimiser (and so downstream training) uses the current, possibly learnt, rate."""
        if self.hparams.learn_inner_lr:
            self.inner.lr = float(self.log_inner_lr.detach().exp())

    def configure_optimizers(self):
        params = list(self.summary.parameters()) + ([self.log_inner_lr] if self.hparams.learn_inner_lr else [])
        return make_optimizers(self.optimizer_factory, self.scheduler_factory, params)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.relative_clip is not None:
            checkpoint["relative_clip"] = self.relative_clip.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.relative_clip is not None and "relative_clip" in checkpoint:
            self.relative_clip.load_state_dict(checkpoint["relative_clip"])

    # ---- the bilevel step ----

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        started = time.perf_counter()
        self._sync_inner_lr()
        hyper = tuple(self.summary.parameters())
        stepped = (*hyper, self.log_inner_lr) if self.hparams.learn_inner_lr else hyper
        strategy = self.trainer.strategy
        step = self.outer_step(lambda draw: seeds.outer_step(self.global_step, draw),
                               lambda generator: real_batch(self._real, generator, self.device,
                                                            self.hparams.outer_batch_size), self.global_rank,
                               lambda t: strategy.reduce(t, reduce_op="mean"))
        optimizer = self.optimizers()
        optimizer.zero_grad()
        for p, g in zip(stepped, step.grads):
            p.grad = g
        if step.finite:
            self.nonfinite_streak = 0
            limit = clip_limit(self.hparams.gradient_clip_val, self.relative_clip, float(step.grad_norm))
            if limit is not None:
                self.clip_gradients(optimizer, gradient_clip_val=limit, gradient_clip_algorithm="norm")
        else:
            self._skip_step(stepped)
        optimizer.step()  # with every .grad None (a skipped step) the optimiser leaves the summary as it is
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self._log_step(step, time.perf_counter() - started)

    def _skip_step(self, stepped: tuple[Tensor, ...]) -> None:
        """A non-finite meta-gradient or loss: the summary is left as it is (the step still counts, so the next
        one draws afresh); after ``max_nonfinite_steps`` in a row, save a checkpoint and stop."""
        for p in stepped:
            p.grad = None
        self.nonfinite_streak, self.skipped_steps = self.nonfinite_streak + 1, self.skipped_steps + 1
        rank_zero_warn(f"outer step {self.global_step}: non-finite meta-gradient or loss; the summary was not updated "
                       f"({self.nonfinite_streak} in a row)")
        if self.nonfinite_streak >= self.hparams.max_nonfinite_steps:
            self.trainer.save_checkpoint(path := export_dir(self.trainer) / "nonfinite.ckpt")
            raise ValueError(nonfinite_stop(self.nonfinite_streak, self.global_step, path))

    def _log_step(self, step: StepResult, seconds: float) -> None:
        """Scalars for the logger (``step_metrics``); the progress bar shows the outer loss, seconds per step and
        drift (the ``DownstreamEvaluation`` callback adds its last metric)."""
        batch_size = self.trainer.datamodule.batch_size if self.trainer.datamodule is not None else 1
        metrics = step_metrics(step, self.summary, seconds, self.inner.lr, self.skipped_steps)
        self.log_dict(metrics, batch_size=batch_size)
        self.log_dict({"outer_loss": metrics["train/outer_loss"], "s/step": seconds, "drift": metrics["train/drift"]},
                      prog_bar=True, logger=False, batch_size=batch_size)

    def on_fit_end(self) -> None:
        self._sync_inner_lr()
        if self.trainer.is_global_zero:
            export_summary(self.summary, self.trainer, feed=self.feed, learner=self.learner,
                           recipe=self.downstream.recipe(self.inner, self.hparams.inner_batch_size),
                           top_k=self.hparams.summary_top_k, rank=self.hparams.summary_rank,
                           bits=self.hparams.summary_bits)
