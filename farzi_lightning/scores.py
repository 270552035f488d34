"""What the downstream harness reports: ``Score`` (per-seed values, chosen steps, curves) and its tables, log
keys and paired differences (summary − each other candidate, per seed, with a 95% interval)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .stats import paired


@dataclass
class Score:
    """One (learner, candidate): per-seed values of each metric on the scored split, and the chosen steps."""

    values: dict[str, list[float]] = field(default_factory=dict)
    best_steps: list[int] = field(default_factory=list)
    curves: list[list[tuple[int, float]]] = field(default_factory=list)
    capped: list[bool] = field(default_factory=list)
    """Per seed: training ran to the cap of ``steps`` without patience stopping it (it may still improve)."""

    def mean(self, metric: str) -> float:
        return statistics.fmean(self.values[metric])

    def std(self, metric: str) -> float:
        v = self.values[metric]
        return statistics.stdev(v) if len(v) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"values": self.values, "mean": {m: self.mean(m) for m in self.values},
                "std": {m: self.std(m) for m in self.values}, "best_steps": self.best_steps, "curves": self.curves,
                "capped": self.capped}




def log_dict(results: dict[tuple[str, str], Score]) -> dict[str, float]:
    """``downstream/<learner>/<candidate>/<metric>`` (mean) and ``.../<metric>_std`` for a logger, and the paired
    differences ``paired/<learner>/summary-<other>/<metric>`` (mean, ``_lo``, ``_hi``: the 95% interval)."""
    out = {}
    for (lname, candidate), score in results.items():
        for metric in score.values:
            out[f"downstream/{lname}/{candidate}/{metric}"] = score.mean(metric)
            out[f"downstream/{lname}/{candidate}/{metric}_std"] = score.std(metric)
    for (lname, other, metric), iv in paired_differences(results).items():
        key = f"paired/{lname}/summary-{other}/{metric}"
        out[key] = iv.mean
        if iv.n > 1:
            out[key + "_lo"], out[key + "_hi"] = iv.lo, iv.hi
    return out


def table(results: dict[tuple[str, str], Score]) -> str:
    """A Markdown table of the results: one row per (learner, candidate), mean ± std per metric, the best step
    of each seed (``!`` marks a seed that hit the cap of steps while patience had not stopped it)."""
    metrics = sorted({m for s in results.values() for m in s.values})
    lines = ["| learner | candidate | " + " | ".join(metrics) + " | best step |",
             "|---" * (len(metrics) + 3) + "|"]
    for (lname, candidate), score in results.items():
        cells = [f"{score.mean(m):.4f} ± {score.std(m):.4f}" if m in score.values else "" for m in metrics]
        capped = score.capped or [False] * len(score.best_steps)
        steps = "/".join(f"{s}{'!' if c else ''}" for s, c in zip(score.best_steps, capped))
        lines.append(f"| {lname} | {candidate} | " + " | ".join(cells) + f" | {steps} |")
    if any(any(s.capped) for s in results.values()):
        lines.append("\n`!`: the seed trained to the cap of steps and may still have been improving.")
    return "\n".join(lines)


def paired_differences(results: dict[tuple[str, str], Score], candidate: str = "summary") -> dict:
    """``{(learner, other, metric): Interval}``: ``candidate − other`` per seed with its 95% interval, for every
    other candidate of the same learner (references, which have no seeds, pair with every seed)."""
    out = {}
    for (lname, name), score in results.items():
        if name != candidate:
            continue
        for (other_learner, other), base in results.items():
            if other == candidate or (other_learner != lname and other != "full"):
                continue
            for metric, values in score.values.items():
                if metric in base.values:
                    out[(lname, other, metric)] = paired(values, base.values[metric])
    return out


def paired_table(results: dict[tuple[str, str], Score], candidate: str = "summary") -> str:
    """A Markdown table of ``paired_differences``: mean difference and 95% interval (``*``: excludes 0)."""
    rows = paired_differences(results, candidate)
    if not rows:
        return ""
    lines = [f"| learner | {candidate} − | metric | mean difference [95% interval] |", "|---|---|---|---|"]
    for (lname, other, metric), iv in rows.items():
        lines.append(f"| {lname} | {other} | {metric} | {iv} |")
    lines.append("\nPaired by downstream seed (same initialisation and batch order); `*`: the interval excludes 0.")
    return "\n".join(lines)
