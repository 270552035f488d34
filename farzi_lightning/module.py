"""``FarziLightningModule``: distil a data set into a summary by exact meta-gradients (manual optimisation).

    farzi fit --config configs/ml100k.yaml        # distil; watch it with `tensorboard --logdir runs`
    farzi test --config configs/ml100k.yaml --ckpt_path <ckpt>   # fresh learners trained on the summary

One outer step: draw θ0 from the start point, train the learner for T inner steps on the summary with the
inner optimiser, take its loss on a real batch, and step the summary along the exact meta-gradient.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader

from . import bilevel, seeds
from .checkpoints import VerifiedLoad, save_config
from .contracts import DATA, check_lengths, require
from .data.windows import check_int
from .distributed import check_precision, check_strategy
from .downstream import Downstream, log_dict, paired_table, table
from .export import decode_rows, export_dir, export_summary
from .files import atomic_write
from .inner import InnerOptimizer, MetaGradient
from .learners import Learner
from .starts import RandomStart, StartPoint
from .summaries import Feed, Summary
from .summaries.feed import InputMode
from .teacher import Teacher, as_teacher
from .trajectories import TrajectoryBank

SummaryCallable = Callable[[int], Summary]

# Lightning's ModelCheckpoint asks manual-optimisation modules to stash pre-step weights; a distillation's
# checkpoint is meant to hold the state after the step (exact resume), so the notice is noise here.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
# Raised inside Lightning's own pytree helper on torch >= 2.9; nothing a user of this package can change.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class FarziLightningModule(VerifiedLoad, LightningModule):
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
        learn_inner_lr: also learn the inner learning rate: its log is a parameter stepped by the outer
            optimiser along the exact meta-gradient (the reverse optimisers return ``lr_grad``); downstream
            training then uses the learnt rate.
        meta_batch_size: start points drawn per outer step on each process; the summary steps along the mean of
            their meta-gradients, and under DDP the mean over every process's draws (N processes with
            ``meta_batch_size`` m equal one process with N·m).
        max_nonfinite_steps: an outer step whose meta-gradient or loss is NaN/Inf leaves the summary untouched
            (counted in ``train/skipped_steps``); this many in a row save ``nonfinite.ckpt`` and stop the fit.
        downstream: the downstream-evaluation harness of ``farzi test`` and the ``DownstreamEvaluation``
            callback (None: ``Downstream()`` defaults).
        summary_top_k: ``summary.pt`` keeps each position's k most likely tokens (renormalised) instead of all
            V (None: every probability, exact); a latent summary is stored as its factors either way.
        summary_rank: ``summary.pt`` keeps rank-r factors and a bias fitted to the distributions in KL (float16) instead
            of all V per position (None: see ``summary_top_k``); exact up to rounding when the targets come from
            a teacher of width below r.
    """

    def __init__(self, learner: Learner, summary: SummaryCallable, inner_optimizer: InnerOptimizer,
                 start: StartPoint | None = None, input_mode: InputMode = "soft", input_temperature: float = 1.0,
                 target_temperature: float = 1.0, teacher: str | Teacher | None = None, inner_batch_size: int = 0,
                 optimizer: OptimizerCallable = torch.optim.Adam, lr_scheduler: LRSchedulerCallable | None = None,
                 gradient_clip_val: float | None = None, learn_inner_lr: bool = False, meta_batch_size: int = 1,
                 max_nonfinite_steps: int = 5, downstream: Downstream | None = None,
                 summary_top_k: int | None = None, summary_rank: int | None = None) -> None:
        super().__init__()
        save_config(self)
        self.automatic_optimization = False
        if not isinstance(learner, Learner):
            raise TypeError(f"model.init_args.learner: {type(learner).__name__} is not a farzi_lightning.learners."
                            "Learner (vocab_size, padding_idx, max_len, config(), forward; docs/extending.md)")
        self.learner = learner.requires_grad_(False)  # θ lives in the inner optimiser, not in DDP or .grad
        self.summary = summary(learner.vocab_size)
        if not isinstance(self.summary, Summary):
            raise TypeError(f"model.init_args.summary: {type(self.summary).__name__} is not a farzi_lightning."
                            "summaries.Summary")
        if self.summary.padding_idx is None:
            self.summary.padding_idx = learner.padding_idx
        max_len = learner.max_len
        if max_len is not None and self.summary.seq_len - 1 > max_len:
            raise ValueError(f"model.init_args.summary.init_args.seq_len={self.summary.seq_len} needs the learner to "
                             f"read {self.summary.seq_len - 1} tokens, but model.init_args.learner.init_args.max_len="
                             f"{max_len}")
        check_int("model.init_args.meta_batch_size", meta_batch_size, 1)
        check_int("model.init_args.max_nonfinite_steps", max_nonfinite_steps, 1)
        check_int("model.init_args.inner_batch_size", inner_batch_size, 0)
        if inner_batch_size > self.summary.num_sequences:
            rank_zero_warn(f"model.init_args.inner_batch_size={inner_batch_size} is larger than the summary "
                           f"(model.init_args.summary.init_args.num_sequences={self.summary.num_sequences}): every "
                           f"inner step reads all {self.summary.num_sequences} rows")
        if summary_top_k is not None:
            check_int("model.init_args.summary_top_k", summary_top_k, 1)
        if summary_rank is not None:
            check_int("model.init_args.summary_rank", summary_rank, 1)
            if summary_top_k is not None:
                raise ValueError("model.init_args: set summary_top_k or summary_rank, not both")
        self.nonfinite_streak = self.skipped_steps = 0
        if gradient_clip_val is not None and not gradient_clip_val > 0:
            raise ValueError(f"model.init_args.gradient_clip_val must be positive or null, got {gradient_clip_val}")
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
        self._aux: dict[str, nn.Module] = {}  # teacher and warm-start copies: not submodules, not in checkpoints
        self.results: dict = {}

    # ---- setup ----

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        require(data, DATA, "distillation data", "data")
        check_lengths(data, self.learner)
        check_strategy(self.trainer.strategy)
        check_precision(self.trainer.precision)
        if self.trainer.precision == "bf16-mixed" and self.device.type == "cpu":
            rank_zero_warn("trainer.precision: bf16-mixed on CPU slows a distillation down and rounds the inner "
                           "forward passes without saving memory that matters; 32-true is the default")
        self.start.setup(self)
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
                self._check_size(real)
                self.summary.initialize(real.to(self.device), seeds.summary_init(), teacher)

    def _check_size(self, real: Tensor) -> None:
        """Warn when the summary is not small next to the data, or longer than most real sequences."""
        s, key = self.summary, "model.init_args.summary.init_args"
        if s.num_sequences >= len(real):
            rank_zero_warn(f"{key}.num_sequences={s.num_sequences}: the data has only {len(real)} training sequences; "
                           "the summary is not smaller than the data")
        if s.padding_idx is not None:
            lengths = (real != s.padding_idx).sum(1)
            full = int((lengths >= s.seq_len).sum())
            if full < len(real) / 2:
                rank_zero_warn(f"{key}.seq_len={s.seq_len} is longer than most real sequences: {full} of {len(real)} "
                               f"have {s.seq_len} tokens (median {int(lengths.median())}); padded positions of the "
                               "initial rows are filled with tokens drawn from the data. A shorter summary fits the "
                               "data better")

    def on_fit_start(self) -> None:
        if any(isinstance(c, ModelSummary) for c in self.trainer.callbacks):
            rank_zero_info(self.size_line())

    def size_line(self) -> str:
        """The summary's parameters and its size in tokens as a share of the training data."""
        s = self.summary
        shapes = ", ".join(f"{n} {tuple(p.shape)}" for n, p in s.named_parameters())
        line = (f"Summary: {type(s).__name__} [{shapes}] = {s.num_sequences} sequences x {s.seq_len} tokens = "
                f"{s.size_tokens:,} tokens")
        data = self.trainer.datamodule
        if data is not None:
            total = int(data.train_counts().sum())
            line += f", {100 * s.size_tokens / total:.2f}% of the {total:,} training tokens"
        return line

    def teacher_model(self) -> nn.Module | None:
        """The model that labels (``teacher``, else the start point's full-data model), loaded once; None when
        there is none."""
        if "teacher" not in self._aux:
            model = None
            if self.teacher_spec is not None:
                model = self._from_banks(lambda data: self.teacher_spec.model(data.fingerprint, data.vocab_size,
                                                                              self.device))
            else:
                model = self.start.teacher(self.device)
            if model is None:
                return None
            reads = getattr(model, "max_len", None)
            if reads is not None and self.summary.seq_len - 1 > reads:
                raise ValueError(f"model.init_args.teacher: the full-data model reads at most {reads} tokens, but "
                                 f"model.init_args.summary.init_args.seq_len={self.summary.seq_len} needs "
                                 f"{self.summary.seq_len - 1}; pretrain with a longer max_len or shorten the summary")
            self._aux["teacher"] = model.requires_grad_(False)
        return self._aux["teacher"]

    def full_model(self) -> nn.Module | None:
        """The ``full`` reference: the best-validation checkpoint of the teacher's first bank (else the start
        point's full-data model), loaded once."""
        if "full" not in self._aux:
            if self.teacher_spec is None:
                model = self.start.teacher(self.device)
            else:
                model = self._from_banks(lambda data: TrajectoryBank(
                    self.teacher_spec.banks[0], fingerprint=data.fingerprint, vocab_size=data.vocab_size
                ).model(map_location=self.device))
            if model is None:
                return None
            self._aux["full"] = model.requires_grad_(False)
        return self._aux["full"]

    def _from_banks(self, load: Callable) -> nn.Module:
        try:
            return load(self._data())
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"model.init_args.teacher: {err}") from err

    def learner_copy(self) -> nn.Module:
        """A trainable copy of the learner (warm starts train it in place; built once)."""
        if "copy" not in self._aux:
            self._aux["copy"] = copy.deepcopy(self.learner).requires_grad_(True)
        return self._aux["copy"]

    def _sync_inner_lr(self) -> None:
        """The inner optimiser (and so downstream training) uses the current, possibly learnt, rate."""
        if self.hparams.learn_inner_lr:
            self.inner.lr = float(self.log_inner_lr.detach().exp())

    def configure_optimizers(self):
        params = list(self.summary.parameters()) + ([self.log_inner_lr] if self.hparams.learn_inner_lr else [])
        try:
            optimizer = self.optimizer_factory(params)
        except ValueError as err:  # torch.optim's "Invalid learning rate: -0.1"
            raise ValueError(f"model.init_args.optimizer: {err}") from None
        if self.scheduler_factory is None:
            return optimizer
        try:
            scheduler = self.scheduler_factory(optimizer)
        except (ValueError, TypeError) as err:
            raise ValueError(f"model.init_args.lr_scheduler: {err}") from None
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _generator(self, draw: int) -> torch.Generator:
        """Randomness of one draw of an outer step from (seed, step, draw) alone: a resumed run draws exactly the
        same, and every draw (of every process) its own start point, inner order and real batch."""
        return seeds.outer_step(self.global_step, draw)

    # ---- the bilevel step ----

    def _real_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The outer step's real batch, drawn from (seed, step) like everything else in the step.

        The dataloader paces the loop; drawing the batch here, rather than taking the loader's, keeps a resumed
        run identical to an uninterrupted one (Lightning restarts epochs and loaders on resume).
        """
        loader = self._real
        rows = torch.randint(len(loader.dataset), (loader.batch_size,), generator=generator).tolist()
        x, y = loader.collate_fn([loader.dataset[i] for i in rows])
        return x.to(self.device), y.to(self.device)

    def _draw(self, draw: int) -> MetaGradient:
        """The meta-gradient of one start point: θ0, inner order and real batch all from (seed, step, draw)."""
        generator = self._generator(draw)
        x, y = self._real_batch(generator)
        theta0 = self.start.sample(self, generator)
        schedule = bilevel.inner_schedule(self.summary.num_sequences, self.hparams.inner_batch_size,
                                          self.inner.steps, generator).to(self.device)
        self.learner.eval()  # no dropout: the reversal recomputes each inner step and must see the same function
        inner = bilevel.inner_loss(self.learner, self.summary, schedule, self.feed)
        return self.inner.meta_gradient(inner, bilevel.outer_loss(self.learner, x, y), theta0,
                                        tuple(self.summary.parameters()))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        started = time.perf_counter()
        self._sync_inner_lr()
        hyper = tuple(self.summary.parameters())
        stepped = (*hyper, self.log_inner_lr) if self.hparams.learn_inner_lr else hyper
        draws = self.hparams.meta_batch_size
        sums: list[Tensor] | None = None
        stats = torch.zeros(4, dtype=torch.float64)  # outer loss, inner loss, drift, replayed steps
        for j in range(draws):
            # Draw indices run over all processes: N processes × m draws equal one process × N·m draws.
            result = self._draw(self.global_rank * draws + j)
            grads = list(result.grads)
            if self.hparams.learn_inner_lr:
                if result.lr_grad is None:
                    raise ValueError(f"model.init_args.learn_inner_lr: {type(self.inner).__name__} gives no "
                                     "learning-rate meta-gradient; use ReverseAdam, ReverseSGD or an unrolled "
                                     "reference")
                # d/d log lr = lr · d/d lr
                grads.append((result.lr_grad * self.inner.lr).to(self.log_inner_lr.dtype).reshape(()))
            sums = grads if sums is None else [a + b for a, b in zip(sums, grads)]
            stats += torch.tensor([float(result.outer_loss), float(result.inner_loss), result.drift,
                                   result.replayed_steps], dtype=torch.float64)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        strategy = self.trainer.strategy
        for p, g in zip(stepped, sums):
            # autograd.grad bypasses DDP's reducer: the mean over every process's draws goes through the strategy.
            p.grad = strategy.reduce(g / draws, reduce_op="mean")
        stats = strategy.reduce((stats / draws).to(self.device), reduce_op="mean").cpu()
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in hyper]))
        if bool(torch.isfinite(grad_norm)) and bool(torch.isfinite(stats[0])):  # the same on every process
            self.nonfinite_streak = 0
            if self.hparams.gradient_clip_val is not None:
                self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val,
                                    gradient_clip_algorithm="norm")
        else:
            self._skip_step(stepped)
        optimizer.step()  # with every .grad None (a skipped step) the optimiser leaves the summary as it is
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self._log_step(stats, grad_norm, time.perf_counter() - started)

    def _skip_step(self, stepped: tuple[Tensor, ...]) -> None:
        """A non-finite meta-gradient or loss: the summary is left as it is (the step still counts, so the next
        one draws afresh); after ``max_nonfinite_steps`` in a row, save a checkpoint and stop."""
        for p in stepped:
            p.grad = None
        self.nonfinite_streak += 1
        self.skipped_steps += 1
        rank_zero_warn(f"outer step {self.global_step}: non-finite meta-gradient or loss; the summary was not updated "
                       f"({self.nonfinite_streak} in a row)")
        if self.nonfinite_streak >= self.hparams.max_nonfinite_steps:
            path = export_dir(self.trainer) / "nonfinite.ckpt"
            self.trainer.save_checkpoint(path)
            raise ValueError(f"model.init_args.max_nonfinite_steps: {self.nonfinite_streak} outer steps in a row gave "
                             f"a non-finite meta-gradient or loss (up to step {self.global_step}); stopped, state "
                             f"saved in {path}. Lower the inner or outer learning rate, or clip (gradient_clip_val)")

    def _log_step(self, stats: Tensor, grad_norm: Tensor, seconds: float) -> None:
        """Scalars for the logger; the progress bar shows the outer loss, seconds per step and drift (the
        ``DownstreamEvaluation`` callback adds its last metric). ``stats`` is already averaged over processes."""
        outer, inner, drift, replayed = stats.tolist()
        with torch.no_grad():
            probs = self.summary()
            entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum(-1).mean()
            used = torch.unique(probs.argmax(-1)).numel()
        batch_size = self.trainer.datamodule.batch_size if self.trainer.datamodule is not None else 1
        self.log_dict({"train/outer_loss": outer, "train/inner_loss": inner, "train/meta_grad_norm": grad_norm,
                       "train/drift": drift, "train/replayed_steps": replayed, "summary/entropy": entropy,
                       "summary/effective_vocab": torch.exp(entropy), "summary/distinct_tokens": float(used),
                       "time/seconds_per_step": seconds, "train/inner_lr": self.inner.lr,
                       "train/skipped_steps": float(self.skipped_steps)}, batch_size=batch_size)
        self.log_dict({"outer_loss": outer, "s/step": seconds, "drift": drift}, prog_bar=True, logger=False,
                      batch_size=batch_size)

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

    def evaluate_downstream(self, split: str, candidates: list[str] | None = None, data=None) -> dict:
        """Fresh learners trained on the summary (and the harness's other candidates), scored on ``split``; every
        process must call it (the jobs are shared out over the processes and the results gathered on all).
        ``data``: a data module to score on outside a Trainer (studies); None: the trainer's."""
        self._sync_inner_lr()
        self._bound_data = data
        try:
            attached = self._trainer is not None
            return self.downstream.evaluate(
                summary=self.summary, feed=self.feed, learner=self.learner, inner=self.inner,
                inner_batch_size=self.hparams.inner_batch_size, data=self._data(), split=split,
                teacher=self.teacher_model(), full=self.full_model(), candidates=candidates, device=self.device,
                progress=rank_zero_info, rank=self.global_rank, world_size=self.trainer.world_size if attached else 1,
                reduce=lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
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

    def on_fit_end(self) -> None:
        self._sync_inner_lr()
        if self.trainer.is_global_zero:
            export_summary(self.summary, self.trainer, feed=self.feed, learner=self.learner,
                           recipe=self.downstream.recipe(self.inner, self.hparams.inner_batch_size),
                           top_k=self.hparams.summary_top_k, rank=self.hparams.summary_rank)
