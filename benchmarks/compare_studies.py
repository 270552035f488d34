"""Two size-curve studies that distil the same seeds from the same starts, one setting apart: the paired
difference (B − A) seed by seed — on validation (each seed's validation curve averaged over its evaluated
steps after the start, the quantity a choice is made on) and on test (the selected and the end summaries).

    python benchmarks/compare_studies.py docs/results/select_ml100k/results.json \\
        docs/results/horizon_ml100k/results.json --size 20

Seeds are those both studies hold; each distillation seed's difference is its mean over the downstream seeds
(which pair: same initialisation and batch order), and the 95% interval is over distillation seeds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from pathlib import Path

from farzi_lightning.stats import interval

_spec = importlib.util.spec_from_file_location("size_curve", Path(__file__).with_name("size_curve.py"))
size_curve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(size_curve)


def curve_mean(record: dict, metric: str, steps: set[int]) -> float:
    """Mean validation ``metric`` (over downstream seeds) at ``steps`` of one distillation's curve."""
    points = [p for p in record["valid"] if p["step"] in steps]
    return statistics.fmean(p["metrics"][f"downstream/sasrec/summary/{metric}"] for p in points)


def test_mean(record: dict, which: str, metric: str) -> float:
    return statistics.fmean(size_curve.values(record[which], "summary", metric))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the reference study's results.json")
    parser.add_argument("b", help="the study one setting apart")
    parser.add_argument("--size", required=True, help="the summary size (rows)")
    args = parser.parse_args()
    a, b = (json.loads(Path(p).read_text()) for p in (args.a, args.b))
    metric = b["study"]["metric"]
    ra, rb = a["sizes"][args.size]["distill"], b["sizes"][args.size]["distill"]
    seeds = sorted((set(ra) & set(rb)), key=int)
    seeds = [s for s in seeds if "end" in ra[s] and "end" in rb[s]]
    if not seeds:
        raise SystemExit("no distillation seed finished in both studies")
    starts = [test_mean(ra[s], "start", metric) - test_mean(rb[s], "start", metric) for s in seeds]
    if any(abs(d) > 1e-12 for d in starts):
        print(f"warning: the two studies' starts differ (start A − B per seed: {starts}); the pairing assumes "
              "the same start summaries")
    rows = []
    steps = {p["step"] for s in seeds for p in rb[s].get("valid", [])} & \
        {p["step"] for s in seeds for p in ra[s].get("valid", [])}
    steps.discard(0)
    if steps:
        rows.append((f"validation, mean over steps {min(steps)}-{max(steps)}",
                     [curve_mean(rb[s], metric, steps) - curve_mean(ra[s], metric, steps) for s in seeds]))
    for which in ("selected", "end"):
        if all(which in ra[s] and which in rb[s] for s in seeds):
            rows.append((f"test, {which}", [test_mean(rb[s], which, metric) - test_mean(ra[s], which, metric)
                                             for s in seeds]))
            rows.append((f"test, {which} − start (B)", [test_mean(rb[s], which, metric) -
                                                       test_mean(rb[s], "start", metric) for s in seeds]))
    print(f"B − A, {metric}, distillation seeds {', '.join(seeds)} (A: {args.a}; B: {args.b})")
    for name, diffs in rows:
        iv = interval(diffs)
        per = ", ".join(f"{d:+.4f}" for d in diffs)
        print(f"  {name}: {iv.mean:+.4f} [{iv.lo:+.4f}, {iv.hi:+.4f}] (per seed {per})")


if __name__ == "__main__":
    main()
