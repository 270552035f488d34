"""The one product a reversed inner step needs, two ways: reverse-over-reverse (what ``ReverseAdam`` and unrolled
autograd both do: the gradient with ``create_graph=True``, then one backward of ``<g, v>``) against
forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``), on the learner and summary of
``benchmarks/meta_grad.py`` (a 2-layer d=128 Transformer LM, V=10,000, a latent summary of 20 x 50).

Both give ``g = ∇_θ L`` and ``(H_θθ v, H_zθ v)`` for the summary's latent ``Z`` and map ``M`` (the Hessian is
symmetric, so the forward tangent of ``∇_(θ,Z,M) L`` along ``v`` holds both blocks); they are checked to agree
(relative error ≤ 1e-5 in float32) before their times count. A forward-over-reverse step cheaper than the
reverse-over-reverse one would take the reversal below unrolled autograd; on CPU it is not.

    python benchmarks/hvp_modes.py          # median of 5 calls each, alternating, after one warm-up each
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.func import functional_call, grad, jvp

from farzi_lightning.files import atomic_write
from farzi_lightning.learners import TransformerLM

ROOT = Path(__file__).resolve().parents[1]
VOCAB, D_MODEL, LAYERS, HEADS, N_SEQ, SEQ_LEN, LATENT = 10_000, 128, 2, 2, 20, 50, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hvp_modes_cpu.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TransformerLM(VOCAB, D_MODEL, LAYERS, HEADS, max_len=SEQ_LEN, dropout=0.0)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    z, m = torch.randn(N_SEQ, SEQ_LEN, LATENT), torch.randn(LATENT, VOCAB) * 0.1
    v = {k: torch.randn_like(t) for k, t in params.items()}  # the adjoint of g_t (dg in the reversal)

    def inner_loss(p, zz, mm):  # the summary batch and the learner's soft-target loss, as meta_grad.py's
        soft = torch.softmax(zz @ mm, dim=-1)  # (B, L, V)
        logits = functional_call(model, p, (soft[:, :-1],))
        return -(soft[:, 1:] * torch.log_softmax(logits, -1)).sum(-1).mean()

    def reverse_over_reverse():
        theta = {k: t.clone().requires_grad_() for k, t in params.items()}
        zz, mm = z.clone().requires_grad_(), m.clone().requires_grad_()
        g = torch.autograd.grad(inner_loss(theta, zz, mm), list(theta.values()), create_graph=True)
        dot = sum((gk * v[k]).sum() for gk, k in zip(g, theta))
        out = torch.autograd.grad(dot, [*theta.values(), zz, mm])
        return [gk.detach() for gk in g], list(out)

    def forward_over_reverse():
        gradient = grad(inner_loss, argnums=(0, 1, 2))
        (g, _, _), (h, hz, hm) = jvp(lambda p: gradient(p, z, m), (params,), (v,))
        return [g[k] for k in params], [*(h[k] for k in params), hz, hm]

    def plain_gradient():  # what a forward inner step computes: for scale
        theta = {k: t.clone().requires_grad_() for k, t in params.items()}
        return torch.autograd.grad(inner_loss(theta, z, m), list(theta.values()))

    (g_a, h_a), (g_b, h_b) = reverse_over_reverse(), forward_over_reverse()
    errors = [float((a - b).norm() / a.norm()) for a, b in zip(g_a + h_a, g_b + h_b)]
    if max(errors) > 1e-5:
        raise SystemExit(f"the two products disagree: largest relative error {max(errors):.3g}")
    methods = {"reverse-over-reverse": reverse_over_reverse, "forward-over-reverse": forward_over_reverse,
               "plain gradient": plain_gradient}
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):  # alternating, so drifts of the machine's speed hit every method alike
        for name, fn in methods.items():
            started = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - started)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    ror = median["reverse-over-reverse"]
    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "largest_relative_error": max(errors), "seconds": seconds,
              "median_seconds": median, "over_reverse_over_reverse": {k: t / ror for k, t in median.items()}}
    text = json.dumps(result, indent=1)
    atomic_write(Path(args.out), lambda f: f.write(text.encode()))
    print("| product | median s | × reverse-over-reverse |\n| --- | ---: | ---: |")
    for name, t in median.items():
        print(f"| {name} | {t:.3f} | {t / ror:.2f} |")
    print(f"agreement: largest relative error {max(errors):.2g}; {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
