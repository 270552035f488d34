"""What the outer loop optimises against what it is judged by, along a size-curve study's runs: the outer loss
and the meta-gradient norm logged at every outer step (TensorBoard), averaged over blocks of outer steps, beside
the validation metric of the downstream evaluations at the blocks' ends.

    python benchmarks/outer_curves.py runs/study/select_ml100k/20 --seeds 6 7 8 9 10 11

Each seed's outer loss is averaged over a block (its warm-up length is drawn afresh every step, so single steps
are noisy); the table gives the mean over seeds, and the paired change from the first block (outer loss) or
from the start (validation) with its 95% interval over distillation seeds, and the same from the second block
on: does the outer loss still fall, and does validation still rise?
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from farzi_lightning.stats import interval

VALID = "downstream/{learner}/summary/{metric}"


def scalars(run: Path, tags: list[str]) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` from the TensorBoard events under ``run`` (its newest version)."""
    versions = sorted((run / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not versions:
        raise SystemExit(f"{run}: no lightning_logs/version_* (run the study first)")
    events = EventAccumulator(str(versions[-1]), size_guidance={"scalars": 0})
    events.Reload()
    missing = [tag for tag in tags if tag not in events.Tags()["scalars"]]
    if missing:
        raise SystemExit(f"{versions[-1]}: no {', '.join(missing)} logged")
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in tags}


def block_means(values: dict[int, float], block: int, last: int) -> list[float]:
    """Means of ``values`` over outer steps (block·i, block·(i+1)] — logged at global step s for outer step s+1."""
    return [statistics.fmean(values[s] for s in range(i, i + block)) for i in range(0, last, block)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a study's size directory (runs/study/<name>/<size>)")
    parser.add_argument("--seeds", nargs="+", required=True, help="distillation seeds (seed-<r> directories)")
    parser.add_argument("--block", type=int, default=25, help="outer steps per block (the validation interval)")
    parser.add_argument("--steps", type=int, default=150, help="outer steps of each run")
    parser.add_argument("--metric", default="hr@10", help="the downstream validation metric")
    parser.add_argument("--learner", default="sasrec", help="the downstream learner's name in the logged tags")
    args = parser.parse_args()
    tags = ["train/outer_loss", "train/meta_grad_norm", VALID.format(learner=args.learner, metric=args.metric)]
    outer, norm, valid = [], [], []
    for seed in args.seeds:
        logged = scalars(args.runs / f"seed-{seed}", tags)
        outer.append(block_means(logged[tags[0]], args.block, args.steps))
        norm.append(block_means(logged[tags[1]], args.block, args.steps))
        ends = range(0, args.steps + 1, args.block)
        if not set(ends) <= logged[tags[2]].keys():
            raise SystemExit(f"seed-{seed}: validation not logged at every step of {list(ends)} (--block, --steps)")
        valid.append([logged[tags[2]][s] for s in ends])
    print(f"{args.runs}, seeds {' '.join(args.seeds)}: means over seeds; changes paired per seed, 95% over seeds")
    print("| outer steps | outer loss | − first block | meta-gradient norm | "
          f"valid {args.metric} at the end | − start |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| 0 (start) | | | | {statistics.fmean(v[0] for v in valid):.4f} | |")
    for i in range(args.steps // args.block):
        lo, hi = i * args.block + 1, (i + 1) * args.block
        change = interval([o[i] - o[0] for o in outer]) if i else None
        gain = interval([v[i + 1] - v[0] for v in valid])
        print(f"| {lo}–{hi} | {statistics.fmean(o[i] for o in outer):.4f} | {change or ''} | "
              f"{statistics.fmean(n[i] for n in norm):.4f} | "
              f"{statistics.fmean(v[i + 1] for v in valid):.4f} | {gain} |")
    # after the first block: does the outer loss still fall, and does validation still rise?
    print(f"outer loss, last block − block 2: {interval([o[-1] - o[1] for o in outer])}; "
          f"valid {args.metric}, end − block 2's end: {interval([v[-1] - v[2] for v in valid])}")


if __name__ == "__main__":
    main()
