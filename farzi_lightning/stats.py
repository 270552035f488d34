"""Paired statistics: is the summary better than a baseline, or is the difference noise?

Seed s of every downstream candidate starts from the same fresh initialisation and the same batch stream, so
per-seed differences ``summary_s − baseline_s`` are paired. A difference is claimed only when the 95%
confidence interval of their mean (Student's t, n − 1 degrees of freedom) excludes 0. Where several
distillation seeds exist, the unit is the distillation seed: each one's mean difference over downstream seeds,
then the interval over distillation seeds (``nested``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Two-sided 95% quantiles of Student's t, t_{0.975}(df), df = 1..30 (standard tables); beyond 30 the normal
# quantile 1.96 is within 2% of t.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.959964


@dataclass
class Interval:
    """The mean of ``n`` paired differences and its 95% interval (``lo``, ``hi``; NaN when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.lo > 0 or self.hi < 0)

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.4g} (n=1, no interval)"
        mark = " *" if self.excludes_zero else ""
        return f"{self.mean:+.4g} [{self.lo:+.4g}, {self.hi:+.4g}]{mark}"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n, "excludes_zero": self.excludes_zero}


def interval(differences: list[float]) -> Interval:
    """Mean and 95% t-interval of ``differences`` (one per pair)."""
    n = len(differences)
    if n == 0:
        raise ValueError("no differences to summarise")
    mean = statistics.fmean(differences)
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = t975(n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired(a: list[float], b: list[float]) -> Interval:
    """``a − b`` paired by position (seed); a single ``b`` value (a reference without seeds) pairs with all."""
    if len(b) == 1 and len(a) > 1:
        b = b * len(a)
    if len(a) != len(b):
        raise ValueError(f"paired values need the same seeds: {len(a)} against {len(b)}")
    return interval([x - y for x, y in zip(a, b)])


def nested(a: list[list[float]], b: list[list[float]]) -> Interval:
    """Distillation seeds × downstream seeds: each distillation seed's mean paired difference, then the interval
    over distillation seeds (the unit that varies when a distillation is repeated)."""
    return interval([paired(x, y).mean for x, y in zip(a, b, strict=True)])
