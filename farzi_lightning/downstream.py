"""Downstream evaluation: what fresh learners trained on a summary reach on real data, beside every cheap
alternative of the same size. One harness, used by ``farzi test``, the ``DownstreamEvaluation`` callback and
``benchmarks/study.py``.

Candidates (by name):

- ``summary``: the distilled summary, fed to the learner as in the inner loop (``Feed``);
- same-size baselines: ``random`` (real rows drawn uniformly, a new draw per seed), ``head`` (the most
  active rows), ``teacher`` (random real rows whose targets are a full-data model's predictions);
- references, no training: ``full`` (the full-data model itself: the teacher checkpoint), and the count
  floors ``popularity`` (items by training frequency; seen items excluded like every scorer) and
  ``unigram`` (words by training frequency).

Protocol: for every (learner, candidate, seed) a fresh learner (``torch.manual_seed(seed)``) trains on the
candidate; every ``eval_every`` steps it is scored on the validation split, and it stops once ``patience``
checks in a row have not improved on its best (or at the cap of ``steps``; the result says which). The split
asked for is scored at the best validation point. Weak candidates overfit within tens of steps, strong ones
can still improve after hundreds: patience trains each until it stops improving. Results are mean ± std over
seeds.

Pairing: seed s of every candidate starts from the same fresh initialisation and draws its batches from the
same stream (``seeds.downstream(s)``), and the ``random`` and ``teacher`` baselines draw their rows from that
stream too, so per-seed differences are paired (``paired``); the summary itself starts from seed 0's draw
(``seeds.summary_init`` equals ``seeds.downstream(0)``), so its seed-0 row is also where it began. A claimed
difference is one whose 95% interval excludes 0.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from . import seeds
from .fresh import checked, make_optimizer, score, train_to_patience
from .inner import InnerOptimizer
from .learners import build_learner
from .parts import RecordsInit
from .scores import Score, log_dict, paired_differences, paired_table, table  # noqa: F401 (re-exported)
from .summaries import Feed, Summary, make_baseline
from .teacher import CountModel

LEARNED = ("summary", "random", "head", "teacher")
REFERENCES = ("full", "popularity", "unigram")
CANDIDATES = LEARNED + REFERENCES


class Downstream(RecordsInit):
    """The downstream-evaluation harness (see the module docstring).

    Args:
        candidates: what to evaluate (``summary``, ``random``, ``head``, ``teacher``, ``full``, ``popularity``,
            ``unigram``); a name that does not apply to the data (``unigram`` on interactions) is skipped.
        learners: extra architectures trained like the distillation learner, as ``{"class_path", "init_args"}``
            (``vocab_size`` is filled in), e.g. an ``RNNLM`` for cross-architecture checks.
        seeds: fresh initialisations per (learner, candidate).
        optimizer: ``inner`` (the ``torch.optim`` twin of the inner optimiser), ``adam`` or ``sgd``.
        lr: downstream learning rate (None: the inner loop's).
        steps: the cap on downstream optimiser steps (None: the inner loop's T).
        batch_size: summary sequences per step (None: the inner loop's).
        eval_every: validate every this many steps (and at the last step); the best point is kept.
        patience: stop after this many validation checks in a row without improvement (None: train to the cap).
        val_batches: validation batches per check (None: the whole split); the final split is always whole.
        k: cut-off of HR@k / nDCG@k.
        teacher_targets: the ``teacher`` candidate's targets: ``teacher`` (the teacher's own distributions, the
            learner reading the real rows) or ``lifted`` (one distribution per position, the real token on top).
    """

    def __init__(self, candidates: list[str] | None = None, learners: list[dict] | None = None, seeds: int = 3,
                 optimizer: Literal["inner", "adam", "sgd"] = "inner", lr: float | None = None,
                 steps: int | None = None, batch_size: int | None = None, eval_every: int = 25,
                 val_batches: int | None = None, k: int = 10, patience: int | None = 5,
                 teacher_targets: Literal["teacher", "lifted"] = "teacher") -> None:
        candidates = list(candidates) if candidates is not None else ["summary", "random", "head"]
        for name in candidates:
            if name not in CANDIDATES:
                raise ValueError(f"downstream candidates: unknown {name!r}; expected some of {', '.join(CANDIDATES)}")
        for key, value in (("seeds", seeds), ("eval_every", eval_every), ("k", k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"downstream {key} must be an integer >= 1, got {value!r}")
        for key, value in (("steps", steps), ("batch_size", batch_size), ("val_batches", val_batches),
                           ("patience", patience)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"downstream {key} must be None or an integer >= 1, got {value!r}")
        if lr is not None and not lr > 0:
            raise ValueError(f"downstream lr must be positive, got {lr}")
        if optimizer not in ("inner", "adam", "sgd"):
            raise ValueError(f"downstream optimizer must be inner, adam or sgd, got {optimizer!r}")
        self.candidates, self.learners, self.seeds = candidates, list(learners or []), seeds
        self.optimizer, self.lr, self.steps, self.batch_size = optimizer, lr, steps, batch_size
        if teacher_targets not in ("teacher", "lifted"):
            raise ValueError(f"downstream teacher_targets must be teacher or lifted, got {teacher_targets!r}")
        self.eval_every, self.val_batches, self.k, self.patience = eval_every, val_batches, k, patience
        self.teacher_targets = teacher_targets
        self._cache: dict[tuple, Score] = {}

    # ---- the recipe ----

    def recipe(self, inner: InnerOptimizer, inner_batch_size: int) -> dict[str, Any]:
        """The resolved training recipe (what ``summary.pt`` records): optimiser, its hyper-parameters, lr,
        steps, batch size. ``inner`` resolves to the inner optimiser's own (``torch_optimizer``): ``adam``,
        ``adamw``, ``sgd``, or ``forwardoptimizer`` (an inner optimiser without a ``torch.optim`` twin)."""
        kind = self.optimizer
        if kind == "inner":
            kind = type(inner.torch_optimizer([torch.zeros(1, requires_grad=True)])).__name__.lower()
        return {"optimizer": kind, "lr": self.lr or inner.lr, "steps": self.steps or inner.steps,
                "batch_size": self.batch_size or inner_batch_size or None, "eval_every": self.eval_every,
                "seeds": self.seeds, "betas": getattr(inner, "betas", (0.9, 0.999)), "eps": getattr(inner, "eps", 1e-8),
                "momentum": getattr(inner, "momentum", 0.0), "weight_decay": getattr(inner, "weight_decay", 0.0),
                "patience": self.patience}

    make_optimizer = staticmethod(make_optimizer)

    def learner_configs(self, learner: nn.Module) -> dict[str, dict]:
        """``{name: config}``: the distillation learner first, then the extra architectures."""
        configs = [learner.config()]
        for extra in self.learners:
            extra = copy.deepcopy(dict(extra))
            extra.setdefault("init_args", {}).setdefault("vocab_size", learner.vocab_size)
            configs.append(extra)
        named: dict[str, dict] = {}
        for config in configs:
            base = config["class_path"].rpartition(".")[2].lower()
            name, i = base, 2
            while name in named:
                name, i = f"{base}{i}", i + 1
            named[name] = config
        return named

    # ---- evaluation ----

    def evaluate(self, *, summary: Summary, feed: Feed, learner: nn.Module, inner: InnerOptimizer,
                 inner_batch_size: int, data: Any, split: Literal["valid", "test"],
                 teacher: nn.Module | None = None, full: nn.Module | None = None,
                 candidates: list[str] | None = None,
                 device: torch.device | str = "cpu", progress=None, learners: list[str] | None = None,
                 rank: int = 0, world_size: int = 1,
                 reduce: Callable[[Tensor], Tensor] | None = None) -> dict[tuple[str, str], Score]:
        """Score every (learner, candidate) on ``split``; baselines and references are computed once and cached
        by everything that shapes them (split, learner, size, training recipe, teacher), as they do not change
        while the summary does. ``teacher`` labels the ``teacher`` candidate; ``full`` is the ``full``
        reference (None: ``teacher``). ``learners`` restricts the learners by name (``learner_configs``). Runs
        outside inference mode and leaves every global random state as it found it.

        Across processes, every process calls this with its ``rank``, the ``world_size`` and ``reduce`` (a sum
        over processes, e.g. the Lightning strategy's): the (learner, candidate, seed) jobs are dealt out in
        turn, each process runs its share, and the sum gathers every result on every process. A job's result
        does not depend on the process that runs it, so N processes return what one returns, N times faster.
        """
        if world_size > 1 and reduce is None:
            raise ValueError("Downstream.evaluate: world_size > 1 needs reduce (a sum over processes)")
        recipe = self.recipe(inner, inner_batch_size)
        full = full if full is not None else teacher
        text = not _is_interactions(data)
        shape = json.dumps([recipe, self.val_batches, self.k, self.teacher_targets, summary.num_sequences,
                            summary.seq_len, _fingerprint(teacher), _fingerprint(full)], sort_keys=True, default=str)
        named = self.learner_configs(learner)
        first = next(iter(named))
        learners = {n: c for n, c in named.items() if learners is None or n in learners}
        # ---- the jobs: (result key, cache key, candidate, learner name, seed); seed None for a reference ----
        slots: list[tuple[tuple[str, str], tuple]] = []
        jobs: list[tuple[tuple[str, str], tuple, str, str, int | None]] = []
        for name in candidates or self.candidates:
            if name in REFERENCES:
                if first not in learners or (name == "full" and full is None):
                    continue  # references belong to the distillation learner's rows
                if name != "full" and (name == "popularity") == text:
                    continue  # the floor of the other kind of data
                out = (full.__class__.__name__.lower(), name) if name == "full" else (first, name)
                cache = (first, name, split, shape)
                slots.append((out, cache))
                if cache not in self._cache:
                    jobs.append((out, cache, name, first, None))
                continue
            if name == "teacher" and teacher is None:
                continue
            for lname in learners:
                cache = (lname, name, split, shape) if name != "summary" else None
                slots.append(((lname, name), cache))
                if cache not in self._cache:
                    jobs += [((lname, name), cache, name, lname, seed) for seed in range(self.seeds)]
        if progress is not None and jobs:
            progress(f"Downstream evaluation on the {split} split: {len(jobs)} jobs (fresh learners and references)"
                     + (f", {len(jobs[rank::world_size])} on this process" if world_size > 1 else ""))
        # ---- this process's share, packed into rows a sum over processes gathers ----
        metrics = ["ppl"] if text else [f"hr@{self.k}", f"ndcg@{self.k}"]
        checks = [s for s in range(1, recipe["steps"] + 1) if s % self.eval_every == 0 or s == recipe["steps"]]
        head = len(metrics) + 2  # metrics, best step, capped; then the validation curve (NaN after a stop)
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(
                devices=[torch.device(device)] if torch.device(device).type == "cuda" else []):
            packed = torch.full((len(jobs), head + len(checks)), math.nan, dtype=torch.float64)
            val = data.val_dataloader()
            final = val if split == "valid" else data.test_dataloader()
            with torch.no_grad():
                summary_rows = summary().detach()  # (n, L, V), once: every summary job trains on these
                summary_ids, summary_weights = summary.input_ids(), summary.weights()
            real = data.real_sequences() if any(j[2] in LEARNED[1:] for j in jobs) else None
            for i, (_, _, name, lname, seed) in enumerate(jobs):
                if i % world_size != rank:
                    continue
                if seed is None:
                    model = full if name == "full" else CountModel(
                        data.train_counts(), getattr(learner, "padding_idx", None)).to(device)
                    values = checked(lambda m=model: self.score(m, final, None), f"{name} reference")
                    best_step, capped, curve = 0, False, []
                else:
                    weights = None
                    if name == "summary":
                        rows, ids, candidate_feed, weights = summary_rows, summary_ids, feed, summary_weights
                    else:
                        rows, ids, candidate_feed = self._baseline(name, summary, real, teacher, seed, device)
                    fresh = self._fresh(named[lname], seed, device)
                    values, best_step, curve, capped = train_to_patience(
                        fresh, rows, candidate_feed, self.make_optimizer(recipe, fresh.parameters(), inner), recipe,
                        seed, val, final, text=text, k=self.k, eval_every=self.eval_every,
                        patience=recipe.get("patience", self.patience), val_batches=self.val_batches, ids=ids,
                        label=f"{lname}/{name} seed {seed}", weights=weights)
                    if progress is not None:
                        cap = f", hit the cap of {recipe['steps']} steps" if capped else ""
                        progress(f"{lname}/{name} seed {seed}: " + ", ".join(
                            f"{m} {v:.4g}" for m, v in values.items()) + f" (best step {best_step}{cap})")
                packed[i, : len(metrics)] = torch.tensor([values[m] for m in metrics], dtype=torch.float64)
                packed[i, len(metrics)] = best_step
                packed[i, len(metrics) + 1] = float(capped)
                packed[i, head: head + len(curve)] = torch.tensor([v for _, v in curve], dtype=torch.float64)
            if world_size > 1:  # a job's row is NaN on every process but its own: sum the finite parts
                mine = torch.tensor([i % world_size == rank for i in range(len(jobs))])
                packed = reduce(torch.where(mine[:, None], packed, 0.0).nan_to_num(nan=_UNSET).to(device)).cpu()
                packed = packed.masked_fill(packed == _UNSET, math.nan)
        # ---- unpack: every process holds every result ----
        fresh_scores: dict[tuple, Score] = {}
        for i, (out, cache, _, _, seed) in enumerate(jobs):
            score = fresh_scores.setdefault(cache or out, Score())
            for m, value in zip(metrics, packed[i, : len(metrics)].tolist()):
                score.values.setdefault(m, []).append(value)
            score.best_steps.append(int(packed[i, len(metrics)]))
            if seed is not None:
                score.capped.append(bool(packed[i, len(metrics) + 1]))
                score.curves.append([(c, v) for c, v in zip(checks, packed[i, head:].tolist()) if not math.isnan(v)])
        results: dict[tuple[str, str], Score] = {}
        for out, cache in slots:
            if cache is None:
                results[out] = fresh_scores[out]
                continue
            if cache not in self._cache:
                self._cache[cache] = fresh_scores[cache]
            results[out] = self._cache[cache]
        return results

    def score(self, model: nn.Module, loader: DataLoader, max_batches: int | None) -> dict[str, float]:
        """Real-data metrics of ``model`` on ``loader`` (``fresh.score`` with this harness's k)."""
        return score(model, loader, self.k, max_batches)

    @staticmethod
    def _fresh(config: dict, seed: int, device) -> nn.Module:
        torch.manual_seed(seed)
        return build_learner(config).to(device)

    def _baseline(self, name: str, summary: Summary, real: Tensor, teacher: nn.Module | None, seed: int,
                  device) -> tuple[Tensor, Tensor, Feed]:
        """A same-size baseline's distributions ``(n, L, V)`` and its real rows ``(n, L)`` (the inputs)."""
        baseline = self.baseline(name, summary, real, teacher, seed).to(device)
        return baseline().detach(), baseline.input_ids(), Feed("hard")

    def baseline(self, name: str, summary: Summary, real: Tensor, teacher: nn.Module | None, seed: int) -> Summary:
        """The same-size baseline ``name`` that downstream seed ``seed`` trains on (rows drawn from its stream)."""
        return make_baseline(name, summary.vocab_size, summary.num_sequences, summary.seq_len, summary.padding_idx,
                             real, seeds.downstream(seed), teacher, targets=self.teacher_targets)

_UNSET = -1.0e300  # stands for NaN while packed rows are summed over processes


def _is_interactions(data: Any) -> bool:
    return hasattr(data, "num_items")


def _fingerprint(model: nn.Module | None) -> str | None:
    """Identifies a teacher or reference by its class and weights (the cache must not serve another's rows)."""
    if model is None:
        return None
    with torch.no_grad():
        sums = [float(p.double().sum()) + float((p.double() ** 2).sum()) for p in model.state_dict().values()
                if p.is_floating_point()]
    return f"{type(model).__name__}:{getattr(model, 'temperature', 1.0)}:{len(sums)}:{sum(sums):.12g}"

