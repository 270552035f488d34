"""What one outer optimiser step on the PTB token summary costs: ``torch.optim.Adam`` with its default
(``foreach``) kernels against ``fused=True`` over the same (200, 36, 10,000) logits, side by side in one run.

    python benchmarks/summary_optimizer.py                   # one thread, 7 steps each, median of the last 6
    python benchmarks/summary_optimizer.py --threads 2 --shape 200 36 10000

``configs/ptb.yaml`` steps its summary with ``fused: true`` on this evidence. Both optimisers start from the same
parameters and gradients, and their updates are checked to agree (``allclose``, rtol 1e-5) before their times
count. Writes ``benchmarks/results/summary_optimizer_<device>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from farzi_lightning.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def time_optimizer(param: torch.Tensor, grad: torch.Tensor, steps: int, **options) -> tuple[list[float], torch.Tensor]:
    """Seconds of each of ``steps`` Adam steps on a copy of ``param`` with gradient ``grad``; the last iterate."""
    p = param.detach().clone().requires_grad_(True)
    p.grad = grad.clone()
    opt = torch.optim.Adam([p], lr=0.003, **options)
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        opt.step()
        if p.is_cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds, p.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[200, 36, 10_000], help="the summary's logits")
    parser.add_argument("--steps", type=int, default=7, help="optimiser steps per variant (the first is dropped)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    param = torch.randn(*args.shape, generator=gen).to(args.device)
    grad = torch.randn(*args.shape, generator=gen).mul_(1e-3).to(args.device)
    rows, finals = [], {}
    for name, options in (("Adam (foreach, the default)", {}), ("Adam(fused=True)", {"fused": True})):
        seconds, finals[name] = time_optimizer(param, grad, args.steps, **options)
        rows.append({"optimizer": name, "median_s": statistics.median(seconds[1:]), "seconds": seconds})
    a, b = finals.values()
    agree = bool(torch.allclose(a, b, rtol=1e-5, atol=1e-7))
    if not agree:
        raise SystemExit(f"the fused and default updates disagree (max |diff| {(a - b).abs().max().item():.3g})")
    ratio = rows[0]["median_s"] / rows[1]["median_s"]
    result = {"shape": args.shape, "elements": param.numel(), "threads": args.threads, "device": args.device,
              "torch": torch.__version__, "steps": args.steps, "rows": rows, "default_over_fused": ratio,
              "updates_agree": agree}
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"summary_optimizer_{args.device}.json"
    text = json.dumps(result, indent=1)
    atomic_write(out, lambda f: f.write(text.encode()))
    print(f"| optimiser over {param.numel():,} logits ({args.threads} thread) | median s/step |\n|---|---|")
    for row in rows:
        print(f"| {row['optimizer']} | {row['median_s']:.3f} |")
    print(f"\ndefault / fused: {ratio:.1f}x; wrote {out}")


if __name__ == "__main__":
    main()
