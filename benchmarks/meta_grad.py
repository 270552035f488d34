"""Peak memory and wall time of one meta-gradient vs the number of inner steps T.

A 2-layer d=128 causal Transformer LM (V=10,000) reads a latent summary ``softmax(Z @ M)`` of 20 sequences
of length 50 (latent d=64); the outer loss is next-token cross-entropy on 32 real-shaped sequences (random
ids: only memory and time are measured here). For each T it measures, each in its own process:

- ``reverse``: ``ReverseAdam`` with default settings;
- ``unrolled``: ``UnrolledAdam`` (the whole graph kept) where it fits (``--unrolled-steps``);
- ``fused``: ``ReverseAdam(fused=True)`` (compiled element-wise maps; compiled in the warm-up call);
- ``plain``: T ordinary ``torch.optim.Adam`` steps on the same model and summary batch, no graph.

Memory is the peak of the measured call: RSS (CPU; VmHWM, reset before the call) or
``torch.cuda.max_memory_allocated`` (GPU); "above base" subtracts what the process held just before the measured
call (after building the model and data and a warm-up call): the meta-gradient's own memory, the figure the
T=200 / T=10 bar is on. Neither method computes the inner
learning rate's meta-gradient (``lr_grad=False``: a distillation asks for it only with ``learn_inner_lr``).

    python benchmarks/meta_grad.py                       # CPU, T in {10, 20, 50, 100, 200}
    python benchmarks/meta_grad.py --device cuda         # GPU
    python benchmarks/meta_grad.py --steps 10 20 200 --unrolled-steps 10 20 --repeats 3   # docs/performance.md

Each measurement is its own process; with ``--repeats N`` every job at a T where unrolled also runs is repeated N
times round-robin and the row of median time is reported (``seconds_all`` keeps every repeat): one process's
time on this machine varies by up to ~40% with what ran before it, so one pair of processes is not a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from farzi_lightning.inner import ReverseAdam, UnrolledAdam
from farzi_lightning.learners import TransformerLM

VOCAB, D_MODEL, LAYERS, HEADS = 10_000, 128, 2, 2
N_SEQ, SEQ_LEN, LATENT, SUMMARY_BATCH, REAL_BATCH = 20, 50, 64, 20, 32


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb(device: str) -> float:
    """Peak since ``reset_peak``: the allocator's on GPU, the process's RSS (VmHWM) on CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:  # Linux: writing 5 to clear_refs resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def worker(method: str, steps: int, device: str) -> dict:
    torch.manual_seed(0)
    model = TransformerLM(VOCAB, D_MODEL, LAYERS, HEADS, max_len=SEQ_LEN, dropout=0.0).to(device)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    z = torch.randn(N_SEQ, SEQ_LEN, LATENT, device=device, requires_grad=True)
    m = (torch.randn(LATENT, VOCAB, device=device) * 0.1).requires_grad_(True)
    real = torch.randint(0, VOCAB, (REAL_BATCH, SEQ_LEN), device=device)

    def batch(hyper, step):  # the summary batch for inner step `step`: deterministic, same forward and reverse
        zz, mm = hyper
        rows = torch.arange(SUMMARY_BATCH, device=device).add(step * SUMMARY_BATCH) % N_SEQ
        return torch.softmax(zz[rows] @ mm, dim=-1)  # (B, L, V)

    def inner_loss(p, hyper, step):
        soft = batch(hyper, step)
        logits = functional_call(model, p, (soft[:, :-1],))
        return -(soft[:, 1:] * torch.log_softmax(logits, -1)).sum(-1).mean()

    def outer_loss(p):
        logits = functional_call(model, p, (real[:, :-1],))
        return F.cross_entropy(logits.reshape(-1, VOCAB), real[:, 1:].reshape(-1))

    def run(T: int):
        if method == "plain":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            soft = batch((z.detach(), m.detach()), 0)
            for _ in range(T):
                opt.zero_grad(set_to_none=True)
                loss = -(soft[:, 1:] * torch.log_softmax(model(soft[:, :-1]), -1)).sum(-1).mean()
                loss.backward()
                opt.step()
            return None
        opt = (UnrolledAdam(lr=1e-3, steps=T) if method == "unrolled" else
               ReverseAdam(lr=1e-3, steps=T, fused=method == "fused"))
        return opt.meta_gradient(inner_loss, outer_loss, params, (z, m), lr_grad=False)

    run(2)  # warm-up: allocator, kernels, first-call overheads
    sync(device)
    reset_peak(device)  # the peak of the measured call only, not of the warm-up
    base = torch.cuda.memory_allocated() / 2**20 if device == "cuda" else rss_mb()
    start = time.perf_counter()
    result = run(steps)
    sync(device)
    seconds = time.perf_counter() - start
    out = {"method": method, "T": steps, "seconds": seconds, "peak_mb": peak_mb(device), "base_mb": base}
    if result is not None:
        out.update(drift=result.drift, replayed_steps=result.replayed_steps, phases=result.seconds)
    return out


def median_run(runs: list[dict]) -> dict:
    """The run of median time among repeats of one (method, T), with every repeat's seconds beside it."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "seconds_all": [r["seconds"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 200])
    parser.add_argument("--unrolled-steps", type=int, nargs="*", default=[10, 20],
                        help="T values for UnrolledAdam (it needs ~0.3 GB per step here; none: no values)")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/meta_grad_<device>.json)")
    parser.add_argument("--methods", nargs="+", default=["plain", "reverse", "fused"],
                        help="which of plain, reverse, fused to run at every --steps")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the jobs at the unrolled T values this many times, round-robin; report medians")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.device)))
        return

    jobs = [(m, t) for t in args.steps for m in args.methods]
    jobs += [("unrolled", t) for t in args.unrolled_steps]
    # With --repeats, the jobs at the T values where unrolled runs too are run that many times, round-robin (each
    # round runs every such job once, in turn), so a ratio to unrolled compares medians measured side by side.
    compared = set(args.unrolled_steps)
    runs: dict[tuple[str, int], list[dict]] = {}
    failed = []
    for round_ in range(max(args.repeats, 1)):
        for method, steps in jobs:
            if round_ > 0 and steps not in compared:
                continue
            cmd = [sys.executable, __file__, "--device", args.device, "--worker", method, str(steps)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{method} T={steps} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                failed.append({"method": method, "T": steps, "error": proc.stderr[-500:]})
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            runs.setdefault((method, steps), []).append(row)
            print(f"  done {method:8s} T={steps:4d}  {row['seconds']:8.2f} s", file=sys.stderr, flush=True)
    rows = [median_run(rs) for rs in runs.values()] + failed

    by = {(r["method"], r["T"]): r for r in rows if "error" not in r}
    print(f"\nmeta-gradient cost, {args.device}, V={VOCAB} d={D_MODEL} layers={LAYERS}, summary {N_SEQ}x{SEQ_LEN}")
    print(f"{'method':9s} {'T':>4s} {'seconds':>9s} {'peak MB':>9s} {'above base':>11s} {'x plain':>8s} {'drift':>9s}")
    for r in sorted(by.values(), key=lambda r: (r["method"], r["T"])):
        plain = by.get(("plain", r["T"]))
        ratio = r["seconds"] / plain["seconds"] if plain else float("nan")
        drift = f"{r['drift']:.1e}" if "drift" in r else ""
        above = r["peak_mb"] - r["base_mb"]
        print(f"{r['method']:9s} {r['T']:4d} {r['seconds']:9.2f} {r['peak_mb']:9.0f} {above:11.0f} "
              f"{ratio:8.2f} {drift:>9s}")
    summary = {}
    lo, hi = by.get(("reverse", min(args.steps))), by.get(("reverse", max(args.steps)))
    if lo and hi:
        summary["reverse_peak_ratio_Tmax_over_Tmin"] = hi["peak_mb"] / lo["peak_mb"]
        above = [r["peak_mb"] - r["base_mb"] for r in (hi, lo)]
        summary["reverse_above_base_ratio_Tmax_over_Tmin"] = above[0] / above[1]
    summary["reverse_over_plain"] = {t: by[("reverse", t)]["seconds"] / by[("plain", t)]["seconds"]
                                     for t in args.steps if ("reverse", t) in by and ("plain", t) in by}
    for name in ("reverse", "fused"):
        summary[f"{name}_over_unrolled"] = {t: by[(name, t)]["seconds"] / by[("unrolled", t)]["seconds"]
                                            for t in args.unrolled_steps if (name, t) in by and ("unrolled", t) in by}
    lo, hi = by.get(("fused", min(args.steps))), by.get(("fused", max(args.steps)))
    if lo and hi:
        above = [r["peak_mb"] - r["base_mb"] for r in (hi, lo)]
        summary["fused_above_base_ratio_Tmax_over_Tmin"] = above[0] / above[1]
    print("\n" + json.dumps(summary, indent=2))
    out = Path(args.out or Path(__file__).parent / "results" / f"meta_grad_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": args.device, "torch": torch.__version__, "machine": platform.platform(),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    out.write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
