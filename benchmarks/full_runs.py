"""The full-data reference run by run: each run of a trajectory bank at its best validation checkpoint (the
checkpoint the ``full`` row of every study uses for the bank's best run), scored by the downstream harness on
the test split with no training, and the mean ± std over the runs — how much the single-model ``full`` row would
move with the pretraining seed.

    FARZI_DATA_DIR=../shared/data python benchmarks/full_runs.py runs/banks/ml100k_sasrec

Prints one line per run and the mean ± std; the harness's metrics (ML-100k: HR@10 and nDCG@10 over every item,
seen items excluded).
"""

from __future__ import annotations

import argparse
import statistics

from farzi_lightning.data import InteractionDataModule, TextDataModule
from farzi_lightning.downstream import Downstream
from farzi_lightning.teacher import Teacher
from farzi_lightning.trajectories import TrajectoryBank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bank", help="a trajectory bank directory (farzi fit --config configs/*_pretrain.yaml)")
    parser.add_argument("--data", default="ml-100k", help="ml-100k (interactions) or ptb (text), under $FARZI_DATA_DIR")
    parser.add_argument("--seq-len", type=int, default=50, help="the data windows (the configs' data seq_len)")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    args = parser.parse_args()
    data = (TextDataModule(name="ptb", seq_len=args.seq_len) if args.data == "ptb" else
            InteractionDataModule(name=args.data, seq_len=args.seq_len))
    data.setup("fit")
    loader = data.val_dataloader() if args.split == "valid" else data.test_dataloader()
    bank = TrajectoryBank(args.bank, fingerprint=data.fingerprint, vocab_size=data.vocab_size)
    harness = Downstream()
    values: dict[str, list[float]] = {}
    for run in bank.runs:
        teacher = Teacher(banks=[args.bank], runs=[run])
        (index,) = teacher.indices(bank)
        scores = harness.score(teacher.model(data.fingerprint, data.vocab_size), loader, None)
        for metric, value in scores.items():
            values.setdefault(metric, []).append(value)
        entry = bank.entries[index]
        print(f"{run}: step {entry['step']}, " + ", ".join(f"{m} {v:.4f}" for m, v in scores.items()))
    best = bank.entries[bank.best_index()]["run"]
    print(f"the full row (the bank's best run, {best}) and the mean over {len(bank.runs)} runs:")
    for metric, vals in values.items():
        spread = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        print(f"  {metric}: {vals[bank.runs.index(best)]:.4f}; mean {statistics.mean(vals):.4f} ± {spread:.4f}")


if __name__ == "__main__":
    main()
