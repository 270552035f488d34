"""float32 meta-gradients against the float64 unrolled reference, the figures quoted in docs/inner.md.

On the tiny causal Transformer of the tests (2 layers, d=16, V=13, latent summary), for each (T, lr): the
relative error of ReverseAdam with defaults (float32 learner) and of UnrolledAdam in float32, both against
UnrolledAdam in float64, plus the drift and replayed steps ReverseAdam reports, and the reference's norm.

    python benchmarks/float32_accuracy.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from farzi_lightning.inner import ReverseAdam, UnrolledAdam
from farzi_lightning.testing import rel_error, transformer_problem


def main() -> None:
    rows = []
    print(f"{'T':>4s} {'lr':>7s} {'|ref|':>9s} {'reverse32':>10s} {'unrolled32':>11s} {'drift':>9s} {'replayed':>9s}")
    for steps, lr in [(100, 1e-3), (100, 1e-2), (300, 1e-4), (300, 1e-3)]:
        ref = UnrolledAdam(lr=lr, steps=steps).meta_gradient(*transformer_problem(torch.float64))
        rev = ReverseAdam(lr=lr, steps=steps).meta_gradient(*transformer_problem(torch.float32))
        unr = UnrolledAdam(lr=lr, steps=steps).meta_gradient(*transformer_problem(torch.float32))
        row = {"T": steps, "lr": lr, "ref_norm": float(ref.grads[0].norm()),
               "reverse32": rel_error(rev.grads, ref.grads), "unrolled32": rel_error(unr.grads, ref.grads),
               "drift": rev.drift, "replayed": rev.replayed_steps}
        rows.append(row)
        print(f"{steps:4d} {lr:7.0e} {row['ref_norm']:9.3g} {row['reverse32']:10.2e} {row['unrolled32']:11.2e} "
              f"{row['drift']:9.1e} {row['replayed']:9d}")
    out = Path(__file__).parent / "results" / "float32_accuracy.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
