"""Train fresh learners on a committed ``summary.pt`` and score them, from the file alone (its recipe and feed).

    export FARZI_DATA_DIR=../shared/data
    python benchmarks/check_summary.py docs/results/ml100k_small/outer_lr_0.003.summary.pt
    python benchmarks/check_summary.py docs/results/ptb_small/teacher_soft.summary.pt --data ptb --val-batches 20

Prints the harness's table: the same figure as the study row the file came from (same seeds, same recipe).
"""

from __future__ import annotations

import argparse

from farzi_lightning import load_summary
from farzi_lightning.data import InteractionDataModule, TextDataModule
from farzi_lightning.downstream import evaluate_summary, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", help="a summary.pt written by `farzi fit`")
    parser.add_argument("--data", default="ml-100k", help="ml-100k (interactions) or ptb (text), under $FARZI_DATA_DIR")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--val-batches", type=int, default=None, help="validation batches per check (PTB study: 20)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="downstream seeds 0..N-1 (default: the recipe's, the study row's own)")
    args = parser.parse_args()
    summary = load_summary(args.summary)
    seq_len = summary.learner_config["init_args"]["max_len"]  # the data windows the learner was evaluated on
    if args.data == "ptb":
        data = TextDataModule(name="ptb", seq_len=seq_len)
    else:
        data = InteractionDataModule(name=args.data, seq_len=seq_len)
    results = evaluate_summary(summary, data, args.split, seeds=args.seeds, val_batches=args.val_batches,
                               progress=print)
    print(table(results))


if __name__ == "__main__":
    main()
