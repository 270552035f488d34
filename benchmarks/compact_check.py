"""What compact storage costs: a dense ``summary.pt`` and its top-k form, each retrained with the recipe inside
the file by the same downstream seeds, and the paired difference (compact − dense) with its 95% interval.

    export FARZI_DATA_DIR=../shared/data
    python benchmarks/compact_check.py runs/study/size_ml100k/20/seed-0/dense.summary.pt \\
        docs/results/size_ml100k/size_ml100k_20_seed0.summary.pt --name ml100k_20
    python benchmarks/compact_check.py DENSE COMPACT --data ptb --val-batches 20 --name ptb_200

Appends its row to ``docs/results/compact/results.json`` and rewrites ``results.md`` there: bytes of both files
beside the training file's, test metric of both, the paired difference. The compact form passes when the
interval contains 0 or favours it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from farzi_lightning import load_summary
from farzi_lightning.data import InteractionDataModule, TextDataModule
from farzi_lightning.files import atomic_write
from farzi_lightning.retrain import evaluate_summary
from farzi_lightning.stats import paired

ROOT = Path(__file__).resolve().parents[1]


def score(path: str, data, split: str, val_batches: int | None, seeds: int | None = None) -> tuple[dict, str]:
    results = evaluate_summary(load_summary(path), data, split, seeds=seeds, val_batches=val_batches, progress=print)
    (name, result), = results.items()
    return result.values, name[0]


def fidelity(dense_path: str, compact_path: str) -> dict:
    """How close the stored distributions are: mean KL(dense ‖ compact) per position (nats) and the share of
    positions whose most likely token is the same, over every position of the summary."""
    import torch
    dense, compact = load_summary(dense_path), load_summary(compact_path)
    with torch.no_grad():
        p = dense().reshape(-1, dense.vocab_size).double()
        q = compact().reshape(-1, compact.vocab_size).double()
        kl = (p * (p.clamp_min(1e-300).log() - q.clamp_min(1e-300).log())).sum(-1).mean()
        agree = (p.argmax(-1) == q.argmax(-1)).double().mean()
    return {"kl_nats": float(kl), "argmax_agreement": float(agree)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dense", help="the dense summary.pt")
    parser.add_argument("compact", help="its compact (top-k) form")
    parser.add_argument("--name", required=True, help="the row's name")
    parser.add_argument("--data", default="ml-100k", help="ml-100k (interactions) or ptb (text), under $FARZI_DATA_DIR")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--val-batches", type=int, default=None, help="validation batches per check (PTB: 20)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="downstream seeds 0..N-1 for both files (default: the recipe's)")
    parser.add_argument("--fidelity-only", action="store_true",
                        help="add the KL and argmax agreement to the row of this name; retrain nothing")
    args = parser.parse_args()
    out = ROOT / "docs" / "results" / "compact"
    path = out / "results.json"
    if args.fidelity_only:
        rows = json.loads(path.read_text())
        (row,) = [r for r in rows if r["name"] == args.name]
        row.update(fidelity(args.dense, args.compact))
        write(rows, out)
        return
    seq_len = load_summary(args.dense).learner_config["init_args"]["max_len"]
    data = TextDataModule(name="ptb", seq_len=seq_len) if args.data == "ptb" else \
        InteractionDataModule(name=args.data, seq_len=seq_len)
    data.setup("fit")
    started = time.perf_counter()
    dense, learner = score(args.dense, data, args.split, args.val_batches, args.seeds)
    compact, _ = score(args.compact, data, args.split, args.val_batches, args.seeds)
    metric = "ppl" if "ppl" in dense else "hr@10"
    iv = paired(compact[metric], dense[metric])
    row = {"name": args.name, "dense": args.dense, "compact": args.compact, "metric": metric, "split": args.split,
           "dense_values": dense[metric], "compact_values": compact[metric], "difference": iv.as_dict(),
           "dense_bytes": Path(args.dense).stat().st_size, "compact_bytes": Path(args.compact).stat().st_size,
           "train_bytes": data.train_file.stat().st_size, "learner": learner,
           "seconds": time.perf_counter() - started, **fidelity(args.dense, args.compact)}
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in (json.loads(path.read_text()) if path.exists() else []) if r["name"] != args.name] + [row]
    write(rows, out)


def write(rows: list[dict], out: Path) -> None:
    """``results.json`` and the table ``results.md``."""
    text = json.dumps(rows, indent=1)
    path = out / "results.json"
    atomic_write(path, lambda f: f.write(text.encode()))
    lines = ["# Compact summaries: bytes and quality", "",
             "Command per row: `python benchmarks/compact_check.py DENSE COMPACT --name NAME` (test split, the "
             "recipe inside each file, the same downstream seeds; `--seeds N` where a row has more than 3). "
             "Difference = compact − dense per seed, mean and 95% t-interval. KL: mean KL(dense ‖ compact) per "
             "position, nats; argmax: positions whose most "
             "likely token is kept (blank: not measured for that row).", "",
             "| row | dense bytes | compact bytes | % of training file | KL | argmax | metric | dense | compact | "
             "compact − dense |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, c, diff = r["dense_values"], r["compact_values"], r["difference"]
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        lines.append(f"| {r['name']} | {r['dense_bytes']:,} | {r['compact_bytes']:,} | "
                     f"{100 * r['compact_bytes'] / r['train_bytes']:.1f}% | "
                     + (f"{r['kl_nats']:.4f} | {100 * r['argmax_agreement']:.1f}% | " if "kl_nats" in r else "| | ")
                     + f"{r['metric']} | {mean(d):.4f} | "
                     f"{mean(c):.4f} | {diff['mean']:+.4f} [{diff['lo']:+.4f}, {diff['hi']:+.4f}] |")
    atomic_write(out / "results.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
