"""What m trajectories per outer step cost: one draw, m draws one after another, and m draws stacked
(``batch_draws``: one batched forward per inner step for all of them), on a distillation config, in one run.

    python benchmarks/meta_batch.py                              # configs/ml100k.yaml, m = 4, 6 outer steps each
    python benchmarks/meta_batch.py --config configs/ptb.yaml --draws 4 --steps 4

Each variant runs ``--steps`` outer steps (``outer_steps.time_steps``: callbacks and checkpoints off; the first
step apart) and reports its median seconds per outer step and the ratio to one draw; the last two rows repeat
one draw and the stacked draws with ``ReverseAdam(fused=True)`` (compiled during the first step). That the
stacked draws give the sequential draws' meta-gradient (float64, 1e-10) is pinned by
``tests/test_outer.py::test_stacked_draws_equal_the_sequential_draws_in_float64``. Writes
``benchmarks/results/meta_batch_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outer_steps import ROOT, time_steps  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "ml100k.yaml"))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    fused = "--model.init_args.inner_optimizer.init_args.fused=true"
    variants = {"1 draw": ["--model.init_args.meta_batch_size=1"],
                f"{args.draws} draws, one after another": [f"--model.init_args.meta_batch_size={args.draws}"],
                f"{args.draws} draws, stacked": [f"--model.init_args.meta_batch_size={args.draws}",
                                                 "--model.init_args.batch_draws=true"],
                "1 draw, fused": ["--model.init_args.meta_batch_size=1", fused],
                f"{args.draws} draws, stacked, fused": [f"--model.init_args.meta_batch_size={args.draws}",
                                                        "--model.init_args.batch_draws=true", fused]}
    rows = {}
    for name, overrides in variants.items():
        rows[name] = time_steps(["--config", args.config, *overrides], args.steps, args.device)
        print(f"  {name}: {rows[name]['median_s']:.2f} s/step", file=sys.stderr, flush=True)
    one = rows["1 draw"]["median_s"]
    print(f"| variant ({Path(args.config).name}, {args.device}) | median s/outer step | x one draw |")
    print("|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['median_s']:.2f} | {row['median_s'] / one:.2f} |")
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"meta_batch_{args.device}.json")
    record = {"config": Path(args.config).name, "draws": args.draws, "steps": args.steps,
              "ratios": {name: row["median_s"] / one for name, row in rows.items()}, "rows": rows}
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
