"""Summary parameterisations: real initialisation decodes to real data, functional == forward, baselines."""

from __future__ import annotations

import pytest
import torch

from farzi_lightning.summaries import HeadSampleSummary, LatentSummary, RandomSampleSummary, TokenSummary

V = 40


@pytest.fixture
def real():
    return torch.randint(1, V, (30, 12))


@pytest.mark.parametrize("cls", [LatentSummary, TokenSummary])
def test_real_init_decodes_to_real_sequences(cls, real):
    summary = cls(V, num_sequences=5, seq_len=10, init="real", padding_idx=0)
    summary.initialize(real, torch.Generator().manual_seed(0))
    decoded = summary.decode()
    assert decoded.shape == (5, 10)
    rows = {tuple(r[-10:].tolist()) for r in real}
    assert all(tuple(r.tolist()) in rows for r in decoded)  # every synthetic sequence is a real one, exactly
    probs = summary()
    assert probs.shape == (5, 10, V) and torch.allclose(probs.sum(-1), torch.ones(5, 10))
    assert probs[..., 0].max() == 0  # padding never produced
    assert probs.max(-1).values.mean() > 0.2  # peaked on the real token, not uniform (1/40)


def test_latent_is_small_and_token_is_dense():
    latent, token = LatentSummary(10_000, 50, 36, latent_dim=64), TokenSummary(10_000, 50, 36)
    assert sum(p.numel() for p in latent.parameters()) == 50 * 36 * 64 + 64 * 10_000
    assert sum(p.numel() for p in token.parameters()) == 50 * 36 * 10_000
    assert latent.size_tokens == token.size_tokens == 1800


@pytest.mark.parametrize("cls", [LatentSummary, TokenSummary])
def test_functional_matches_forward_and_is_differentiable(cls):
    summary = cls(V, 4, 6, init="noise")
    rows = torch.tensor([2, 0])
    tensors = tuple(p.detach().clone().requires_grad_(True) for p in summary.parameters())
    out = summary.functional(tensors, rows)
    torch.testing.assert_close(out, summary(rows))
    grads = torch.autograd.grad(out[..., 3].sum(), tensors)
    assert all(g.abs().sum() > 0 for g in grads)


def test_sample_baselines(real):
    random = RandomSampleSummary(V, 5, 10)
    random.initialize(real, torch.Generator().manual_seed(0))
    assert not list(random.parameters())
    torch.testing.assert_close(random().argmax(-1), random.tokens)
    padded = real.clone()
    padded[:, :6] = 0  # every row padded ...
    padded[7, :6] = 3  # ... but row 7, the most active user
    head = HeadSampleSummary(V, 2, 12, padding_idx=0)
    head.initialize(padded)
    assert torch.equal(head.tokens[0], padded[7])


def test_bad_sizes():
    with pytest.raises(ValueError, match="seq_len must be >= 2"):
        LatentSummary(V, 3, 1)
    with pytest.raises(ValueError, match=r"real sequences must be \(N, >= 20\)"):
        LatentSummary(V, 3, 20).initialize(torch.zeros(5, 10, dtype=torch.long))


def test_real_init_prefers_rows_without_padding(real):
    padded = real.clone()
    padded[:25, :3] = 0  # 25 of 30 users have short, left-padded histories
    summary = RandomSampleSummary(V, 5, 10, padding_idx=0)
    summary.initialize(padded, torch.Generator().manual_seed(0))
    assert (summary.tokens != 0).all()
    assert {tuple(r.tolist()) for r in summary.tokens} <= {tuple(r[-10:].tolist()) for r in padded[25:]}


@pytest.mark.parametrize("cls", [RandomSampleSummary, TokenSummary])
def test_init_never_starts_from_padding_even_when_most_rows_are_short(cls, real):
    padded = real.clone()
    padded[:, :6] = 0  # every row: 6 padding tokens, 6 real ones; the summary reads 10
    padded[0, :8] = 0  # one row is shorter still: the least padded rows are taken
    summary = cls(V, 8, 10, padding_idx=0, **({"init": "real"} if cls is TokenSummary else {}))
    summary.initialize(padded, torch.Generator().manual_seed(0))
    tokens = summary.tokens if cls is RandomSampleSummary else summary.decode()
    assert (tokens != 0).all()  # no padding, and no collapse onto one repeated item
    assert len(torch.unique(tokens)) > 10
    real_tail = {tuple(r[-6:].tolist()) for r in padded[1:]}
    assert all(tuple(r[-6:].tolist()) in real_tail for r in tokens)  # the real part is a real user's, kept
