"""Train fresh learners on committed ``summary.pt`` files and score them, from each file alone (its recipe and
feed), optionally against the study rows the files came from.

    export FARZI_DATA_DIR=../shared/data
    python benchmarks/check_summary.py docs/results/ml100k_small/outer_lr_0.003.summary.pt
    python benchmarks/check_summary.py docs/results/ptb_small/teacher_soft.summary.pt --data ptb --val-batches 20
    python benchmarks/check_summary.py docs/results/select_ml100k/select_ml100k_20_seed*.selected.summary.pt \
        --study docs/results/select_ml100k/results.json

Prints the harness's table per file: the same figure as the study row the file came from (same seeds, same
recipe, patience included). With ``--study`` (a size-curve study's ``results.json``) each file is paired with
the row that recorded it (``file``: the end, ``selected_file``: the summary at its best validation point), seed
by seed: file − row, and over several files the 95% interval of the per-file mean differences — what storing
the summary in the file's form (compact, say) costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from farzi_lightning import load_summary
from farzi_lightning.data import InteractionDataModule, TextDataModule
from farzi_lightning.downstream import table
from farzi_lightning.retrain import evaluate_summary
from farzi_lightning.stats import interval, paired

ROOT = Path(__file__).resolve().parents[1]


def study_row(results: dict, path: str) -> tuple[str, dict]:
    """``(label, scores)``: the record of the size-curve study ``results`` whose ``file`` or ``selected_file`` is
    ``path``, and the scores it recorded for that summary."""
    target = Path(path).resolve()
    for size, entry in results["sizes"].items():
        for seed, record in entry.get("distill", {}).items():
            for key, scored in (("file", "end"), ("selected_file", "selected")):
                if key in record and (ROOT / record[key]["path"]).resolve() == target:
                    return f"size {size} seed {seed} {scored}", record[scored]
    raise SystemExit(f"{path}: no record of the study names this file (as 'file' or 'selected_file')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", help="summary.pt files written by `farzi fit` or a study")
    parser.add_argument("--data", default="ml-100k", help="ml-100k (interactions) or ptb (text), under $FARZI_DATA_DIR")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--val-batches", type=int, default=None, help="validation batches per check (PTB study: 20)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="downstream seeds 0..N-1 (default: the recipe's, the study row's own)")
    parser.add_argument("--study", help="a size-curve study's results.json: pair each file with its recorded row")
    args = parser.parse_args()
    results = json.loads(Path(args.study).read_text()) if args.study else None
    means, datas = [], {}
    for path in args.summaries:
        summary = load_summary(path)
        seq_len = summary.learner_config["init_args"]["max_len"]  # the data windows the learner was evaluated on
        if seq_len not in datas:  # read once for all the files of one window length
            datas[seq_len] = (TextDataModule(name="ptb", seq_len=seq_len) if args.data == "ptb" else
                              InteractionDataModule(name=args.data, seq_len=seq_len))
        data = datas[seq_len]
        scored = evaluate_summary(summary, data, args.split, seeds=args.seeds, val_batches=args.val_batches,
                                  progress=print)
        print(f"{path}\n{table(scored)}")
        if results is not None:
            label, row = study_row(results, path)
            ((lname, _), score), = scored.items()
            metric = results["study"]["metric"]
            recorded = row[f"{lname}/summary"]["values"][metric]
            mine = score.values[metric][: len(recorded)]
            diff = paired(mine, recorded)
            means.append(diff.mean)
            print(f"{path}: file − study row ({label}), {metric}: {statistics.mean(mine):.4f} − "
                  f"{statistics.mean(recorded):.4f} = {diff.mean:+.4f} [{diff.lo:+.4f}, {diff.hi:+.4f}] "
                  f"over {len(recorded)} downstream seeds")
    if len(means) > 1:
        pooled = interval(means)
        print(f"file − study row over {len(means)} files: {pooled.mean:+.4f} [{pooled.lo:+.4f}, {pooled.hi:+.4f}]")


if __name__ == "__main__":
    main()
