"""Reference bilevel problems (tests and benchmarks): a tiny MLP and a tiny causal Transformer LM.

Each problem returns ``(inner_loss, outer_loss, params, hyper)`` following the inner-optimiser contract.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from farzi_lightning.learners import TransformerLM


def mlp_problem(dtype: torch.dtype = torch.float64, n_batches: int = 4):
    """Regression with a 5-8-3 tanh MLP; the hyper are the synthetic inputs and targets of each batch."""
    g = torch.Generator().manual_seed(1)
    params = {"w1": torch.randn(5, 8, generator=g) * 0.3, "b1": torch.zeros(8),
              "w2": torch.randn(8, 3, generator=g) * 0.3}
    params = {k: v.to(dtype) for k, v in params.items()}
    x = torch.randn(n_batches, 6, 5, generator=g).to(dtype).requires_grad_(True)
    y = torch.randn(n_batches, 6, 3, generator=g).to(dtype).requires_grad_(True)
    xr, yr = torch.randn(32, 5, generator=g).to(dtype), torch.randn(32, 3, generator=g).to(dtype)

    def f(p, inp):
        return torch.tanh(inp @ p["w1"] + p["b1"]) @ p["w2"]

    def inner_loss(p, hyper, step):
        xs, ys = hyper[:2]
        return ((f(p, xs[step % n_batches]) - ys[step % n_batches]) ** 2).mean()

    def outer_loss(p):
        return ((f(p, xr) - yr) ** 2).mean()

    return inner_loss, outer_loss, params, (x, y)


def transformer_problem(dtype: torch.dtype = torch.float64, vocab: int = 13, seed: int = 0):
    """A 2-layer d=16 causal LM trained on a soft latent summary ``softmax(Z @ M)``; outer loss on real ids."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the model's initialisation from ``seed``; the caller's RNG untouched
        torch.manual_seed(seed)
        model = TransformerLM(vocab, d_model=16, n_layers=2, n_heads=2, max_len=8, dropout=0.0).to(dtype)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    z = (torch.randn(4, 8, 6, generator=g) * 0.5).to(dtype).requires_grad_(True)  # n x L x d
    m = torch.randn(6, vocab, generator=g).to(dtype).requires_grad_(True)  # d x V
    real = torch.randint(0, vocab, (8, 8), generator=g)

    def inner_loss(p, hyper, step):
        zz, mm = hyper
        soft = torch.softmax(zz[step % 3: step % 3 + 2] @ mm, dim=-1)  # (2, L, V), batch chosen by step
        logits = functional_call(model, p, (soft[:, :-1],))
        return -(soft[:, 1:] * torch.log_softmax(logits, -1)).sum(-1).mean()

    def outer_loss(p):
        logits = functional_call(model, p, (real[:, :-1],))
        return F.cross_entropy(logits.reshape(-1, vocab), real[:, 1:].reshape(-1))

    return inner_loss, outer_loss, params, (z, m)


def rel_error(got, want) -> float:
    """Largest relative error (in norm) over a tuple of tensors."""
    return max(float((a.double() - b.double()).norm() / b.double().norm()) for a, b in zip(got, want))
