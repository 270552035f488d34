"""Learners: soft input equals hard input on one-hot rows; double backward works through every learner."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from farzi_lightning.inner import ReverseAdam, UnrolledAdam
from farzi_lightning.learners import RNNLM, SASRec, TransformerLM, build_learner

from problems import rel_error

V = 12
LEARNERS = {
    "transformer": lambda: TransformerLM(V, d_model=16, n_layers=2, n_heads=2, max_len=8, dropout=0.0),
    "sasrec": lambda: SASRec(V, d_model=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0),
    "lstm": lambda: RNNLM(V, d_model=8, n_layers=2, cell="lstm"),
    "gru": lambda: RNNLM(V, d_model=8, hidden=6, n_layers=1, cell="gru"),
}


@pytest.mark.parametrize("name", LEARNERS)
def test_one_hot_soft_input_equals_hard_ids(name):
    model = LEARNERS[name]().eval()
    ids = torch.randint(1, V, (3, 7))
    ids[0, :2] = 0  # left padding for SASRec; an ordinary token elsewhere
    soft = F.one_hot(ids, V).float()
    hard_logits, soft_logits = model(ids), model(soft)
    assert hard_logits.shape == (3, 7, V)
    if name == "sasrec":  # padding is hidden from attention for ids; compare the unpadded rows
        hard_logits, soft_logits = hard_logits[1:], soft_logits[1:]
    torch.testing.assert_close(soft_logits, hard_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", LEARNERS)
def test_reverse_adam_through_learner_matches_unrolled(name):
    model = LEARNERS[name]().double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    z = torch.randn(3, 6, V, dtype=torch.float64, requires_grad=True)
    real = torch.randint(1, V, (4, 7))

    def inner_loss(p, hyper, step):
        soft = torch.softmax(hyper[0][step % 2: step % 2 + 2], dim=-1)
        logits = functional_call(model, p, (soft[:, :-1],))
        return -(soft[:, 1:] * torch.log_softmax(logits, -1)).sum(-1).mean()

    def outer_loss(p):
        logits = functional_call(model, p, (real[:, :-1],))
        return F.cross_entropy(logits.reshape(-1, V), real[:, 1:].reshape(-1))

    got = ReverseAdam(lr=0.01, eps=1e-3, steps=4).meta_gradient(inner_loss, outer_loss, params, (z,))
    want = UnrolledAdam(lr=0.01, eps=1e-3, steps=4).meta_gradient(inner_loss, outer_loss, params, (z,))
    assert float(got.grads[0].norm()) > 0
    assert rel_error(got.grads, want.grads) <= 1e-9


@pytest.mark.parametrize("name", LEARNERS)
def test_config_rebuilds_the_same_architecture(name):
    model = LEARNERS[name]()
    clone = build_learner(model.config())
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        LEARNERS["transformer"]()(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="soft tokens have 5 classes"):
        LEARNERS["lstm"]()(torch.rand(1, 3, 5))
    with pytest.raises(ValueError, match="divisible"):
        TransformerLM(V, d_model=10, n_heads=3)
