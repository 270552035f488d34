"""One outer step's meta-gradient as a unit that needs no Lightning: ``OuterStep``.

m draws per process; draw j of process r uses the generator of (seed, step, r·m + j) for its real batch, its
start point θ0 and its inner order, so N processes with m draws equal one process with N·m, and a resumed run
draws exactly as an uninterrupted one. The meta-gradients and statistics are averaged over the draws, then
over the processes through ``reduce`` (``autograd.grad`` bypasses DDP's reducer: the mean goes through the
strategy). The module (``FarziLightningModule.training_step``) clips, skips a non-finite step and steps the
optimiser; everything before that is here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from . import bilevel
from .context import Context
from .inner import MetaGradient
from .outer_losses import NextToken, OuterLoss
from .starts import StartPoint

Reduce = Callable[[Tensor], Tensor]


def real_batch(loader: DataLoader, generator: torch.Generator, device: torch.device, size: int | None = None
               ) -> tuple[Tensor, Tensor]:
    """A real batch of ``size`` sequences (None: the loader's batch size; 0: every training sequence, in order)
    drawn from ``generator``, not from the loader's own order: the loader only paces the loop, and drawing here
    keeps a resumed run identical to an uninterrupted one."""
    n = len(loader.dataset)
    rows = list(range(n)) if size == 0 else torch.randint(n, (size or loader.batch_size,), generator=generator).tolist()
    x, y = loader.collate_fn([loader.dataset[i] for i in rows])
    return x.to(device), y.to(device)


@dataclass
class StepResult:
    """``grads``: the mean meta-gradient of each stepped tensor (the summary's parameters, then the log inner
    learning rate when it is learnt); ``stats``: mean outer loss, inner loss, drift and replayed steps
    (float64, on the CPU); ``grad_norm``: the norm of the summary's part; ``finite``: gradient and loss finite."""

    grads: list[Tensor]
    stats: Tensor
    grad_norm: Tensor
    finite: bool


class OuterStep:
    """The meta-gradient of one outer step (module docstring).

    Args:
        context: the learner, summary, feed and inner optimiser.
        start: where each draw's θ0 comes from.
        meta_batch_size: draws per process.
        log_inner_lr: the learnt log inner learning rate (a scalar tensor), or None when the rate is fixed.
        loss: the outer loss (``farzi_lightning.outer_losses``; None: ``NextToken``).
        share_real_batch: every draw of a step (on every process) meets the same real batch, drawn from the
            step's own stream (common random numbers: the draws then differ only in θ0 and inner order).
        batch_draws: run a process's draws as one stacked trajectory (``draws_stacked``): the same draws and the
            same mean meta-gradient, one batched forward per inner step for all of them. Its drift is the
            largest over the draws, and a drifting segment is replayed for all of them.
    """

    def __init__(self, context: Context, start: StartPoint, meta_batch_size: int = 1,
                 log_inner_lr: Tensor | None = None, loss: OuterLoss | None = None,
                 share_real_batch: bool = False, batch_draws: bool = False) -> None:
        self.context, self.start, self.meta_batch_size = context, start, meta_batch_size
        self.log_inner_lr, self.loss = log_inner_lr, loss if loss is not None else NextToken()
        self.share_real_batch, self.batch_draws = share_real_batch, batch_draws

    def _prepare(self, generator: torch.Generator, real: Callable[[torch.Generator], tuple[Tensor, Tensor]],
                 shared: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
        """One draw's real batch (unless ``shared``), θ0 and inner order, in that order, from ``generator``."""
        ctx = self.context
        x, y = shared if shared is not None else real(generator)
        theta0 = self.start.sample(ctx, generator)
        schedule = bilevel.inner_schedule(ctx.summary.num_sequences, ctx.inner_batch_size, ctx.inner.steps,
                                          generator).to(ctx.device)
        return x, y, theta0, schedule

    def draw(self, generator: torch.Generator, real: Callable[[torch.Generator], tuple[Tensor, Tensor]],
             shared: tuple[Tensor, Tensor] | None = None) -> MetaGradient:
        """One draw: the real batch (unless ``shared``), θ0 and the inner order, in that order, from ``generator``."""
        ctx = self.context
        x, y, theta0, schedule = self._prepare(generator, real, shared)
        ctx.learner.eval()  # no dropout: the reversal recomputes each inner step and must see the same function
        inner = bilevel.inner_loss(ctx.learner, ctx.summary, schedule, ctx.feed)
        return ctx.inner.meta_gradient(inner, self.loss.build(ctx, x, y), theta0, tuple(ctx.summary.parameters()),
                                       lr_grad=self.log_inner_lr is not None)

    def draws_stacked(self, generators: list[torch.Generator],
                      real: Callable[[torch.Generator], tuple[Tensor, Tensor]],
                      shared: tuple[Tensor, Tensor] | None = None) -> MetaGradient:
        """The draws of ``generators`` in one meta-gradient: each takes its real batch, θ0 and inner order from its
        generator exactly as ``draw`` does; their m trajectories run stacked (``bilevel.stacked_inner_loss``) and
        the outer loss is the sum of theirs. Returns the *sums* over the draws (meta-gradients, ``lr_grad``, outer
        loss, mean inner loss)."""
        ctx = self.context
        draws = [self._prepare(generator, real, shared) for generator in generators]
        theta0 = {k: torch.stack([d[2][k] for d in draws]) for k in draws[0][2]}  # (m, ...) per tensor
        ctx.learner.eval()
        inner = bilevel.stacked_inner_loss(ctx.learner, ctx.summary, torch.stack([d[3] for d in draws]), ctx.feed)
        losses = [self.loss.build(ctx, x, y) for x, y, _, _ in draws]

        def outer(params: dict[str, Tensor]) -> Tensor:
            return sum(loss({k: v[j] for k, v in params.items()}) for j, loss in enumerate(losses))

        return ctx.inner.meta_gradient(inner, outer, theta0, tuple(ctx.summary.parameters()),
                                       lr_grad=self.log_inner_lr is not None)

    def __call__(self, generator: Callable[[int], torch.Generator],
                 real: Callable[[torch.Generator], tuple[Tensor, Tensor]], rank: int = 0,
                 reduce: Reduce | None = None) -> StepResult:
        """``generator(draw)``: the draw's generator (``generator(-1)``, ``generator(-2)``: the step's shared streams,
        for the real batch and the start point's ``begin_step``); ``real(generator)``:
        a real batch; ``rank``: this process; ``reduce``: the mean over processes (None: one process)."""
        ctx, draws = self.context, self.meta_batch_size
        reduce = reduce if reduce is not None else (lambda t: t)
        sums: list[Tensor] | None = None
        stats = torch.zeros(4, dtype=torch.float64)
        self.start.begin_step(ctx, generator(-2))  # what the step's draws share (e.g. a warm-up length)
        shared = real(generator(-1)) if self.share_real_batch else None
        stacked = self.batch_draws and draws > 1
        for j in range(1 if stacked else draws):
            if stacked:  # sums over all the draws at once
                result = self.draws_stacked([generator(rank * draws + i) for i in range(draws)], real, shared)
            else:
                result = self.draw(generator(rank * draws + j), real, shared)
            grads = list(result.grads)
            if self.log_inner_lr is not None:
                if result.lr_grad is None:
                    raise ValueError(f"model.init_args.learn_inner_lr: {type(ctx.inner).__name__} gives no "
                                     "learning-rate meta-gradient; use ReverseAdam, ReverseSGD or an unrolled "
                                     "reference")
                # d/d log lr = lr · d/d lr
                grads.append((result.lr_grad * ctx.inner.lr).to(self.log_inner_lr.dtype).reshape(()))
            sums = grads if sums is None else [a + b for a, b in zip(sums, grads)]
            per = draws if stacked else 1  # drift and replays of a stack count for each of its draws
            stats += torch.tensor([float(result.outer_loss), float(result.inner_loss), result.drift * per,
                                   result.replayed_steps * per], dtype=torch.float64)
        means = [reduce(g / draws) for g in sums]
        stats = reduce((stats / draws).to(ctx.device)).cpu()
        n_summary = len(tuple(ctx.summary.parameters()))
        grad_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in means[:n_summary]]))
        finite = bool(torch.isfinite(grad_norm)) and bool(torch.isfinite(stats[0]))  # the same on every process
        return StepResult(means, stats, grad_norm, finite)


class RelativeClip:
    """Clipping relative to the meta-gradient's own scale: the norm is clipped at ``factor`` × a running average
    (EMA with ``decay``) of past norms, each counted after its clipping so that one spike does not raise the bar;
    the first step only sets the average. Its state goes into checkpoints (exact resume).

    Args:
        factor: the multiple of the running average (e.g. 2.0).
        decay: the EMA's decay (0.9: about the last ten steps).
    """

    def __init__(self, factor: float, decay: float = 0.9) -> None:
        if not factor > 0 or not 0 <= decay < 1:
            raise ValueError(f"relative clipping needs factor > 0 and 0 <= decay < 1, got {factor}, {decay}")
        self.factor, self.decay, self.average = factor, decay, None

    def limit(self) -> float | None:
        """The norm to clip this step's meta-gradient at (None: the first step, no clipping)."""
        return None if self.average is None else self.factor * self.average

    def update(self, norm: float) -> None:
        limit = self.limit()
        norm = norm if limit is None else min(norm, limit)
        self.average = norm if self.average is None else self.decay * self.average + (1 - self.decay) * norm

    def state_dict(self) -> dict[str, float | None]:
        return {"average": self.average}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.average = state["average"]


def clip_limit(absolute: float | None, relative: RelativeClip | None, norm: float) -> float | None:
    """The smaller of the absolute limit and the relative one (None: neither applies); updates ``relative``."""
    limits = [v for v in (absolute, relative.limit() if relative is not None else None) if v is not None]
    if relative is not None:
        relative.update(norm)
    return min(limits) if limits else None


def nonfinite_stop(streak: int, step: int, path) -> str:
    """Why a fit stopped after ``streak`` non-finite outer steps in a row (state saved in ``path``)."""
    return (f"model.init_args.max_nonfinite_steps: {streak} outer steps in a row gave a non-finite meta-gradient or "
            f"loss (up to step {step}); stopped, state saved in {path}. Lower the inner or outer learning rate, or "
            "clip (gradient_clip_val)")


def step_metrics(step: StepResult, summary, seconds: float, inner_lr: float, skipped: int) -> dict[str, float]:
    """What an outer step logs: its losses, meta-gradient norm, drift and replayed steps (already averaged over
    processes), the summary's mean entropy, effective vocabulary and distinct argmax tokens (and the range of its
    row weights where it learns them), time and rates."""
    outer, inner, drift, replayed = step.stats.tolist()
    with torch.no_grad():
        probs = summary()  # (n, L, V)
        entropy = float(-(probs * torch.log(probs.clamp_min(1e-30))).sum(-1).mean())
        used = torch.unique(probs.argmax(-1)).numel()
        weights = summary.weights()
    extra = {} if weights is None else {"summary/row_weight_min": float(weights.min()),
                                        "summary/row_weight_max": float(weights.max())}
    return {**extra, "train/outer_loss": outer, "train/inner_loss": inner,
            "train/meta_grad_norm": float(step.grad_norm), "train/drift": drift, "train/replayed_steps": replayed,
            "summary/entropy": entropy, "summary/effective_vocab": math.exp(entropy),
            "summary/distinct_tokens": float(used),
            "time/seconds_per_step": seconds, "train/inner_lr": inner_lr, "train/skipped_steps": float(skipped)}


__all__ = ["OuterStep", "RelativeClip", "StepResult", "clip_limit", "nonfinite_stop", "real_batch", "step_metrics"]
