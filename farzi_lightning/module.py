"""``FarziLightningModule``: distil a data set into a summary by exact meta-gradients (manual optimisation).

    farzi fit --config configs/ml100k.yaml        # distil; watch it with `tensorboard --logdir lightning_logs`
    farzi test --config configs/ml100k.yaml --ckpt_path <ckpt>   # fresh learners trained on the summary

One outer step: draw θ0 from the trajectory bank, train the learner for T inner steps on the summary with the
inner optimiser, take its loss on a real batch, and step the summary along the exact meta-gradient.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from . import bilevel
from .export import export_summary
from .inner import InnerOptimizer
from .learner import Evaluator
from .learners import build_learner
from .summaries import HeadSampleSummary, RandomSampleSummary, Summary
from .trajectories import TrajectoryBank

SummaryCallable = Callable[[int], Summary]


class FarziLightningModule(LightningModule):
    """Farzi distillation under Lightning manual optimisation.

    Args:
        learner: the model trained in the inner loop (its vocabulary is linked from the data).
        summary: summary factory, e.g. ``LatentSummary`` with init_args; called with the vocabulary size.
        inner_optimizer: ``ReverseAdam``, ``ReverseSGD`` or an unrolled reference; sets T.
        trajectories: trajectory bank directory for θ0; None starts every outer step from a fresh random init.
        trajectory_min_fraction: sample checkpoints from at least this fraction of their run.
        trajectory_max_fraction: ... and at most this fraction (e.g. 0.3: the first 30% of training).
        include_init: whether the runs' step-0 checkpoints may be sampled.
        inner_batch_size: summary sequences per inner step (0: all).
        optimizer: the outer optimiser over the summary's parameters.
        downstream_steps: steps of downstream training at test time (None: T, the inner loop's own).
        downstream_baselines: same-size baselines trained and tested the same way (``random``, ``head``).
        k: cut-off of HR@k / nDCG@k.
    """

    def __init__(self, learner: nn.Module, summary: SummaryCallable, inner_optimizer: InnerOptimizer,
                 trajectories: str | None = None, trajectory_min_fraction: float = 0.0,
                 trajectory_max_fraction: float = 1.0, include_init: bool = True, inner_batch_size: int = 0,
                 optimizer: OptimizerCallable = torch.optim.Adam, downstream_steps: int | None = None,
                 downstream_baselines: list[str] | None = None, k: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["learner", "summary", "inner_optimizer"])
        self.automatic_optimization = False
        self.learner = learner.requires_grad_(False)  # θ lives in the inner optimiser, not in DDP or .grad
        self.summary = summary(learner.vocab_size)
        if self.summary.padding_idx is None:
            self.summary.padding_idx = getattr(learner, "padding_idx", None)
        max_len = getattr(learner, "max_len", None)
        if max_len is not None and self.summary.seq_len - 1 > max_len:
            raise ValueError(f"model.init_args.summary.init_args.seq_len={self.summary.seq_len} needs the learner to "
                             f"read {self.summary.seq_len - 1} tokens, but model.init_args.learner.init_args.max_len="
                             f"{max_len}")
        self.inner = inner_optimizer
        self.optimizer_factory = optimizer
        self.bank: TrajectoryBank | None = None
        self.downstream: dict[str, nn.Module] = {}  # fresh learners of `farzi test`, not part of checkpoints

    # ---- setup ----

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        if self.hparams.trajectories is not None:
            try:
                self.bank = TrajectoryBank(self.hparams.trajectories, fingerprint=getattr(data, "fingerprint", None),
                                           vocab_size=getattr(data, "vocab_size", None),
                                           min_fraction=self.hparams.trajectory_min_fraction,
                                           max_fraction=self.hparams.trajectory_max_fraction,
                                           include_init=self.hparams.include_init)
                self.bank.check_compatible(self.learner)
            except (ValueError, FileNotFoundError) as err:
                raise type(err)(f"model.init_args.trajectories: {err}") from err
        elif stage == "fit":
            rank_zero_warn("FarziLightningModule: no trajectory bank (model.init_args.trajectories); every outer step "
                           "starts from a random initialisation, which usually distils far worse")
        if stage == "fit":
            self._real = data.train_dataloader()
            if self.trainer.ckpt_path is None and self.global_step == 0:
                # The same on every rank (no rank in the seed): DDP also broadcasts rank 0's parameters.
                seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
                self.summary.initialize(data.real_sequences(), torch.Generator().manual_seed(seed))

    def configure_optimizers(self):
        return self.optimizer_factory(self.summary.parameters())

    def _generator(self, salt: int) -> torch.Generator:
        """Randomness of one outer step from (seed, step, rank) alone: a resumed run draws exactly the same, and
        each DDP rank its own start point, inner order and real batch."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return torch.Generator().manual_seed(seed * 7_919 + self.global_step * 104_729 + self.global_rank * 31 + salt)

    def _start_point(self, generator: torch.Generator) -> dict[str, Tensor]:
        if self.bank is not None:
            return self.bank.sample(generator, map_location=self.device)
        fresh = build_learner(self.learner.config()) if hasattr(self.learner, "config") else None
        if fresh is None:
            raise ValueError("model.init_args.trajectories is None and the learner cannot be re-initialised")
        return {k: v.detach().to(self.device) for k, v in fresh.named_parameters()}

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

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        started = time.perf_counter()
        generator = self._generator(0)
        x, y = self._real_batch(generator)
        theta0 = self._start_point(generator)
        schedule = bilevel.inner_schedule(self.summary.num_sequences, self.hparams.inner_batch_size,
                                          self.inner.steps, generator).to(self.device)
        self.learner.eval()  # no dropout: the reversal recomputes each inner step and must see the same function
        hyper = tuple(self.summary.parameters())
        result = self.inner.meta_gradient(bilevel.inner_loss(self.learner, self.summary, schedule),
                                          bilevel.outer_loss(self.learner, x, y), theta0, hyper)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        for p, g in zip(hyper, result.grads):
            p.grad = g
        if dist.is_available() and dist.is_initialized() and self.trainer.world_size > 1:
            # autograd.grad bypasses DDP's reducer: average the meta-gradient across ranks by hand.
            for p in hyper:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= self.trainer.world_size
        grad_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in (p.grad for p in hyper)]))
        self.clip_gradients(optimizer, gradient_clip_val=self.trainer.gradient_clip_val,
                            gradient_clip_algorithm=self.trainer.gradient_clip_algorithm)
        optimizer.step()
        self._log_step(result, grad_norm, time.perf_counter() - started, batch_size=len(x))

    def _log_step(self, result, grad_norm: Tensor, seconds: float, batch_size: int) -> None:
        with torch.no_grad():
            probs = self.summary()
            entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum(-1).mean()
            used = torch.unique(probs.argmax(-1)).numel()
        self.log_dict({"train/outer_loss": result.outer_loss, "train/inner_loss": result.inner_loss,
                       "train/meta_grad_norm": grad_norm, "train/drift": result.drift,
                       "train/replayed_steps": float(result.replayed_steps), "summary/entropy": entropy,
                       "summary/effective_vocab": torch.exp(entropy), "summary/distinct_tokens": float(used),
                       "time/seconds_per_step": seconds}, batch_size=batch_size)
        self.log("outer_loss", result.outer_loss, prog_bar=True, logger=False, batch_size=batch_size)

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        """Nothing: a summary's quality is what fresh learners reach on it, measured by ``farzi test``."""

    # ---- downstream evaluation (farzi test) ----

    def on_test_start(self) -> None:
        """Train fresh learners on the summary (and on same-size baselines) before the test batches arrive."""
        data = self.trainer.datamodule
        steps = self.hparams.downstream_steps or self.inner.steps
        candidates = {"summary": self.summary}
        for name in self.hparams.downstream_baselines or []:
            baseline = {"random": RandomSampleSummary, "head": HeadSampleSummary}.get(name)
            if baseline is None:
                raise ValueError(f"model.init_args.downstream_baselines: unknown baseline {name!r} (random, head)")
            summary = baseline(self.summary.vocab_size, self.summary.num_sequences, self.summary.seq_len,
                               self.summary.padding_idx)
            summary.initialize(data.real_sequences(), torch.Generator().manual_seed(1))
            candidates[name] = summary.to(self.device)
        # The test loop runs under inference_mode, which enable_grad cannot undo: leave it explicitly.
        with torch.inference_mode(False), torch.enable_grad():
            for name, summary in candidates.items():
                torch.manual_seed(0)
                learner = build_learner(self.learner.config()).to(self.device)
                bilevel.train_on_summary(learner, summary, self.inner, steps, self.hparams.inner_batch_size,
                                         torch.Generator().manual_seed(0))
                self.downstream[name] = learner.eval()
        self.evaluators = nn.ModuleDict({n: Evaluator(self.hparams.k) for n in candidates}).to(self.device)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        for name, learner in self.downstream.items():
            self.evaluators[name].update(learner, batch)

    def on_test_epoch_end(self) -> None:
        for name, evaluator in self.evaluators.items():
            self.log_dict(evaluator.compute(f"test/{name}"))

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            export_summary(self.summary, self.trainer)
