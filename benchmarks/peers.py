"""The same meta-gradient computed four ways, side by side: this project's ``ReverseAdam`` and ``UnrolledAdam``,
``torchopt``'s differentiable Adam and ``higher``'s unrolled ``torch.optim.Adam``.

The problem: a 3-layer tanh MLP of width 512 (three 512x512 layers) trained for T Adam steps (lr 1e-3) on a
learnt data set of 64 inputs and targets (the hyper-parameters, 64x512 each); the outer loss is the MSE on 256
fixed real examples. Every method returns d(outer loss)/d(inputs, targets); before its time counts, each
peer's meta-gradient is checked against ``UnrolledAdam`` in float64 at T=10 (relative error <= 1e-6; with
ε = 1e-30 there, see ``AGREE_EPS``; torchopt's bias correction computed in float64 there, see
``torchopt_bias_correction_in_the_moments_dtype``).

Memory and agreement: each (method, T) in its own process with one thread; memory above base is the peak RSS
of one call (VmHWM reset just before it) minus the RSS just before it, after a warm-up call at T=2. Time: all methods
that passed, at one T, in one process with one thread, round-robin, ``--repeats`` calls each after a warm-up;
the median counts. ``plain`` is T ordinary
Adam steps with no graph, the floor of any method; ``reverse-fused`` is ``ReverseAdam(fused=True)`` (compiled
element-wise maps; its compilation falls in the warm-up call).

    pip install -e '.[bench]'        # torchopt and higher
    python benchmarks/peers.py                       # T in {10, 50, 200}
    python benchmarks/peers.py --steps 50 --repeats 3 --methods plain unrolled reverse   # the reversal bar

Writes ``benchmarks/results/peers_cpu.json`` and prints the table (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

WIDTH, DEPTH, N_SYN, N_REAL, LR = 512, 3, 64, 256, 1e-3
#: ``higher`` adds Adam's ε to ``sqrt(v)`` before the bias correction (ε·/sqrt(1 − β2^t) in torch.optim's terms,
#: 32x larger at step 1), and a meta-gradient through Adam is dominated by weights whose gradient is near ε: the
#: agreement check therefore runs with ε so small that both conventions are the same update.
AGREE_EPS = 1e-30
METHODS = ("plain", "unrolled", "reverse", "reverse-fused", "torchopt", "higher")
ROOT = Path(__file__).resolve().parent


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """The process's peak RSS since the last ``reset_peak`` (VmHWM)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_peak() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM to the current RSS)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def mlp() -> torch.nn.Sequential:
    layers = []
    for i in range(DEPTH):
        layers += [torch.nn.Linear(WIDTH, WIDTH)] + ([torch.nn.Tanh()] if i < DEPTH - 1 else [])
    return torch.nn.Sequential(*layers)


def problem(dtype: torch.dtype):
    """The learner, its start point, the learnt data (hyper) and the real batch, all seeded."""
    torch.manual_seed(0)
    model = mlp().to(dtype)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    x_syn = torch.randn(N_SYN, WIDTH, dtype=dtype, requires_grad=True)
    y_syn = torch.randn(N_SYN, WIDTH, dtype=dtype, requires_grad=True)
    x_real, y_real = torch.randn(N_REAL, WIDTH, dtype=dtype), torch.randn(N_REAL, WIDTH, dtype=dtype)
    return model, params, (x_syn, y_syn), (x_real, y_real)


def sq_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over outputs, averaged over examples."""
    return (prediction - target).pow(2).sum(-1).mean()


def method_fn(method: str, steps: int, dtype: torch.dtype, eps: float = 1e-8):
    """A zero-argument call computing the meta-gradient ``(d_x, d_y)`` (None for ``plain``)."""
    from torch.func import functional_call
    model, params, hyper, (x_real, y_real) = problem(dtype)

    def inner_loss(p, h, step):
        return sq_error(functional_call(model, p, (h[0],)), h[1])

    def outer_loss(p):
        return sq_error(functional_call(model, p, (x_real,)), y_real)

    if method in ("reverse", "reverse-fused", "unrolled"):
        from farzi_lightning.inner import ReverseAdam, UnrolledAdam
        opt = (UnrolledAdam(lr=LR, steps=steps, eps=eps) if method == "unrolled" else
               ReverseAdam(lr=LR, steps=steps, eps=eps, fused=method == "reverse-fused"))
        return lambda: opt.meta_gradient(inner_loss, outer_loss, params, hyper, lr_grad=False).grads
    if method == "plain":
        def plain():
            opt = torch.optim.Adam(model.parameters(), lr=LR, eps=eps)
            x, y = (h.detach() for h in hyper)
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                sq_error(model(x), y).backward()
                opt.step()
        return plain
    if method == "torchopt":
        import torchopt

        def run_torchopt():
            names = list(params)
            theta = tuple(params[k].clone().requires_grad_() for k in names)
            opt = torchopt.adam(lr=LR, eps=eps, moment_requires_grad=True)
            state = opt.init(theta)
            for step in range(steps):
                loss = inner_loss(dict(zip(names, theta)), hyper, step)
                grads = torch.autograd.grad(loss, theta, create_graph=True)
                updates, state = opt.update(grads, state, inplace=False)
                theta = torchopt.apply_updates(theta, updates, inplace=False)
            return torch.autograd.grad(outer_loss(dict(zip(names, theta))), hyper)
        return run_torchopt
    if method == "higher":
        import higher

        def run_higher():
            model.load_state_dict(params)
            opt = torch.optim.Adam(model.parameters(), lr=LR, eps=eps)
            with higher.innerloop_ctx(model, opt, copy_initial_weights=True) as (fmodel, diffopt):
                for _ in range(steps):
                    diffopt.step(sq_error(fmodel(hyper[0]), hyper[1]))
                return torch.autograd.grad(sq_error(fmodel(x_real), y_real), hyper)
        return run_higher
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def torchopt_bias_correction_in_the_moments_dtype() -> None:
    """torchopt computes Adam's 1 − β^t as ``pow(β, count)`` with an int64 step count, which is float32 whatever
    the moments' dtype: a float64 check then differs from the float64 reference by ~3e-5 for that reason alone.
    For the agreement check only, the same function in the moments' dtype (timing runs torchopt as it ships)."""
    import optree
    from torchopt.transform.utils import tree_map_flat

    module = sys.modules["torchopt.transform.scale_by_adam"]  # the module (the package attribute is the function)

    def bias_correction(moment, decay, count, *, already_flattened=False):
        def f(t, c):
            return t.div(1 - pow(decay, c.to(t.dtype)))
        return tree_map_flat(f, moment, count) if already_flattened else optree.tree_map(f, moment, count)

    module._bias_correction = bias_correction


def worker(method: str, steps: int) -> dict:
    """Agreement (float64, T=10) and memory above base of one call after a warm-up, in a process of its own."""
    torch.set_num_threads(1)
    method_fn(method, 2, torch.float32)()  # warm-up at T=2 (and compilation, for reverse-fused)
    call = method_fn(method, steps, torch.float32)
    reset_peak()
    base = rss_mb()
    call()
    above = peak_mb() - base  # memory first: the float64 check below would leave its heap behind
    if method != "unrolled" and method != "plain":  # then agreement: float64, T=10, against UnrolledAdam
        ours = method_fn("unrolled", 10, torch.float64, AGREE_EPS)()
        if method == "torchopt":
            import torchopt  # noqa: F401 -- loads the module patched next
            original = sys.modules["torchopt.transform.scale_by_adam"]._bias_correction
            torchopt_bias_correction_in_the_moments_dtype()
        theirs = method_fn(method, 10, torch.float64, AGREE_EPS)()
        if method == "torchopt":
            sys.modules["torchopt.transform.scale_by_adam"]._bias_correction = original
        error = max(float((a - b).norm() / b.norm()) for a, b in zip(theirs, ours))
        if not error <= 1e-6:
            return {"method": method, "T": steps, "error": f"meta-gradient differs from UnrolledAdam: {error:.2e}",
                    "above_base_mb": above}
    else:
        error = 0.0
    return {"method": method, "T": steps, "above_base_mb": above, "agreement": error}


def timing(steps: int, methods: list[str], repeats: int) -> dict[str, list[float]]:
    """Wall time of each method at T=``steps`` in one process, one thread, round-robin (method 1, 2, ..., then
    again), after a warm-up call each: the methods share whatever the machine is doing."""
    torch.set_num_threads(1)
    calls = {m: method_fn(m, steps, torch.float32) for m in methods}
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(repeats):
        for m, call in calls.items():
            started = time.perf_counter()
            call()
            times[m].append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per (method, T); the median counts")
    parser.add_argument("--memory-limit-gb", type=float, default=16.0,
                        help="address-space cap per worker: a method above it is recorded as out of memory")
    parser.add_argument("--out", default=str(ROOT / "results" / "peers_cpu.json"))
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "T"), help=argparse.SUPPRESS)
    parser.add_argument("--timing", type=int, metavar="T", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.timing:
        print(json.dumps(timing(args.timing, args.methods, args.repeats)))
        return
    if args.worker:
        limit = int(args.memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        except MemoryError:
            print(json.dumps({"method": args.worker[0], "T": int(args.worker[1]),
                              "error": f"out of memory (> {args.memory_limit_gb:g} GB)"}))
        return
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for steps in args.steps:
        done = []
        for method in args.methods:  # agreement and memory, each in its own process
            cmd = [sys.executable, __file__, "--worker", method, str(steps),
                   "--memory-limit-gb", str(args.memory_limit_gb)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                row = {"method": method, "T": steps, "error": tail[0][:300]}
                if "out of memory" in proc.stderr or "MemoryError" in proc.stderr or "alloc" in proc.stderr:
                    row["error"] = f"out of memory (> {args.memory_limit_gb:g} GB)"
            else:
                row = json.loads(lines[-1])
            rows.append(row)
            if "error" not in row:
                done.append(row)
            shown = row.get("error") or f"{row['above_base_mb']:.0f} MB above base, agreement {row['agreement']:.1e}"
            print(f"  {method:11s} T={steps:4d}  {shown}", file=sys.stderr, flush=True)
        if done:  # then time: every method that passed, side by side in one process
            cmd = [sys.executable, __file__, "--timing", str(steps), "--repeats", str(args.repeats), "--methods",
                   *[r["method"] for r in done]]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            times = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}
            for r in done:
                if r["method"] in times:
                    r.update(seconds=statistics.median(times[r["method"]]), times=times[r["method"]])
                else:
                    r["error"] = f"timing failed: {proc.stderr.strip().splitlines()[-1:]}"
                print(f"  {r['method']:11s} T={steps:4d}  {r.get('seconds', float('nan')):.3f} s", file=sys.stderr)
        write(args, rows)
    print(table(rows))


def table(rows: list[dict]) -> str:
    by = {(r["method"], r["T"]): r for r in rows}
    lines = ["| method | T | seconds (median) | x unrolled | x plain | MB above base | agreement |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['T']} | {r['error']} | | | | |")
            continue
        ratios = []
        for ref in ("unrolled", "plain"):
            other = by.get((ref, r["T"]))
            ratios.append(f"{r['seconds'] / other['seconds']:.2f}" if other and "seconds" in other else "")
        lines.append(f"| {r['method']} | {r['T']} | {r['seconds']:.3f} | {ratios[0]} | {ratios[1]} | "
                     f"{r['above_base_mb']:.0f} | {r['agreement']:.1e} |")
    return "\n".join(lines)


def write(args, rows: list[dict]) -> None:
    meta = {"torch": torch.__version__, "machine": platform.platform(), "cpu_count": os.cpu_count(), "threads": 1,
            "repeats": args.repeats, "problem": f"{DEPTH}x{WIDTH}^2 tanh MLP, {N_SYN} learnt examples, "
                                                  f"{N_REAL} real, Adam lr {LR}"}
    for name in ("torchopt", "higher"):
        try:
            meta[name] = __import__(name).__dict__.get("__version__", "installed")
        except ImportError:
            meta[name] = None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from farzi_lightning.files import atomic_write
    atomic_write(out, lambda f: f.write(json.dumps({"meta": meta, "rows": rows, "table": table(rows)},
                                                   indent=2).encode()))


if __name__ == "__main__":
    main()
