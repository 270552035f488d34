"""A size-curve study's summary for some of its distillation seeds, optionally against another study's baselines
(e.g. the seeds distilled from a rebuilt bank, against that bank's own teacher-labelled sample and full data).

    python benchmarks/seed_subset.py docs/results/select_ml100k/results.json --size 20 --seeds 0 1 2 3 4 5
    python benchmarks/seed_subset.py docs/results/select_ml100k/results.json --size 20 --seeds 6 7 8 9 10 11 \
        --baselines docs/results/rebuilt_bank_ml100k/results.json

Prints each candidate's mean ± std and the paired differences (end/selected − start, − teacher) of
``size_curve.summarise``, over the chosen distillation seeds only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("size_curve", ROOT / "benchmarks" / "size_curve.py")
size_curve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(size_curve)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a size-curve study's results.json")
    parser.add_argument("--size", required=True, help="the summary size (rows)")
    parser.add_argument("--seeds", nargs="+", required=True, help="distillation seeds to keep")
    parser.add_argument("--baselines", help="another size-curve results.json whose baselines of this size to use")
    args = parser.parse_args()
    state = json.loads(Path(args.results).read_text())
    entry = dict(state["sizes"][args.size])
    entry["distill"] = {s: r for s, r in entry["distill"].items() if s in args.seeds}
    if args.baselines:
        entry["baselines"] = json.loads(Path(args.baselines).read_text())["sizes"][args.size]["baselines"]
    row = size_curve.summarise(state["study"], entry)
    for key, value in row.items():
        if isinstance(value, list) and value and isinstance(value[0], float):
            spread = f" ± {statistics.stdev(value):.4f}" if len(value) > 1 else ""
            print(f"{key}: {statistics.fmean(value):.4f}{spread}")
        elif isinstance(value, dict):
            print(f"{key}: {value['mean']:+.4f} [{value['lo']:+.4f}, {value['hi']:+.4f}] (n={value['n']})")
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
