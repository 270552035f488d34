"""Row-sparse summary meta-gradients, measured side by side in one run: seconds per outer step of the PTB token
summary and the PTB latent summary (same T, inner batch, start points and real batches), and of the ML-100k
config, each with the row-sparse meta-gradient (an inner step differentiates only the summary rows it reads) and
with the dense one it replaces (every reversed step differentiates the whole summary).

    FARZI_DATA_DIR=../shared/data python benchmarks/sparse_rows.py --steps 4
    python benchmarks/sparse_rows.py --cases "ptb token" "ptb latent" --modes sparse --out /tmp/token_latent.json

Needs the configs' teacher banks (``configs/ptb_pretrain.yaml``, ``configs/ml100k_pretrain.yaml``). Writes
``benchmarks/results/sparse_rows_<device>.json`` and prints a Markdown table. The dense path is the same inner
loss without its row-sparse attributes (``farzi_lightning.inner.base``), so the two differ in nothing else.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from farzi_lightning import bilevel
from farzi_lightning.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("outer_steps", ROOT / "benchmarks" / "outer_steps.py")
outer_steps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(outer_steps)

LATENT = ["--model.init_args.summary.class_path=farzi_lightning.summaries.LatentSummary",
          "--model.init_args.summary.init_args.latent_dim=64"]
CASES = {  # name: config arguments
    "ptb token": ["--config", str(ROOT / "configs" / "ptb.yaml")],
    "ptb latent": ["--config", str(ROOT / "configs" / "ptb.yaml"), *LATENT],
    "ml100k token": ["--config", str(ROOT / "configs" / "ml100k.yaml")],
}


@contextmanager
def dense_meta_gradients():
    """The inner loss without its row-sparse attributes: reverse mode then differentiates the whole summary."""
    sparse = bilevel.inner_loss

    def dense(*args, **kwargs):
        loss = sparse(*args, **kwargs)
        return lambda params, hyper, step: loss(params, hyper, step)

    with mock.patch.object(bilevel, "inner_loss", dense):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="outer steps per case (the first is reported apart)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--modes", nargs="+", default=["sparse", "dense"], choices=["sparse", "dense"])
    parser.add_argument("--out", default=None, help="JSON (default benchmarks/results/sparse_rows_<device>.json)")
    args = parser.parse_args()
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"sparse_rows_{args.device}.json")
    results: dict = {"steps": args.steps, "cases": {}}
    for name in args.cases:
        config = CASES[name]
        for mode in args.modes:
            if mode == "dense":
                with dense_meta_gradients():
                    record = outer_steps.time_steps(config, args.steps, args.device)
            else:
                record = outer_steps.time_steps(config, args.steps, args.device)
            results["cases"][f"{name} / {mode}"] = record
            text = json.dumps(results, indent=1) + "\n"
            atomic_write(out, lambda f, text=text: f.write(text.encode()))  # as it goes
            print(f"{name} / {mode}: median {record['median_s']:.2f} s/step", flush=True)
    cases = results["cases"]

    def median(key: str) -> float:
        return cases[key]["median_s"]  # steps 2.. (the first warms up)

    pairs = {"ptb token / ptb latent (sparse)": ("ptb token / sparse", "ptb latent / sparse"),
             "ptb token / ptb latent (dense)": ("ptb token / dense", "ptb latent / dense"),
             "ptb token sparse / dense": ("ptb token / sparse", "ptb token / dense"),
             "ptb latent sparse / dense": ("ptb latent / sparse", "ptb latent / dense"),
             "ml100k sparse / dense": ("ml100k token / sparse", "ml100k token / dense")}
    results["ratios"] = {name: median(a) / median(b) for name, (a, b) in pairs.items() if a in cases and b in cases}
    text = json.dumps(results, indent=1) + "\n"
    atomic_write(out, lambda f: f.write(text.encode()))
    print("| case | median s/step (steps 2..) | first step (s) |\n|---|---|---|")
    for key, record in cases.items():
        print(f"| {key} | {record['median_s']:.2f} | {record['first_step_s']:.2f} |")
    for key, value in results["ratios"].items():
        print(f"| ratio: {key} | {value:.2f} | |")


if __name__ == "__main__":
    main()
