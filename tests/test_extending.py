"""Every extension point: the worked examples of docs/extending.md run through their configs for a few outer
steps, the new inner optimiser is exact, and a part that breaks its contract fails when it is built."""

from __future__ import annotations

import pytest
import torch
from test_configs import ablation_base, bank_maker
from torch import nn

from farzi_lightning import FarziLightningModule
from farzi_lightning.examples.reverse_nesterov import ReverseNesterov
from farzi_lightning.inner import ReverseAdam, State
from farzi_lightning.learners import Learner
from farzi_lightning.summaries import Summary
from farzi_lightning.testing import rel_error, transformer_problem

from cli_utils import ROOT, SHORT_DOWNSTREAM, run

EXAMPLES = sorted((ROOT / "configs" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_from_its_config(example, tmp_path, monkeypatch, data_dir):
    base = ablation_base(example)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FARZI_DATA_DIR", str(data_dir))
    run("fit", config=bank_maker(base))
    cli = run("fit", "--config", str(example), "--trainer.max_steps=2", *SHORT_DOWNSTREAM, config=base)
    assert cli.trainer.global_step == 2
    text = example.read_text()
    parts = {"learner": cli.model.learner, "summary": cli.model.summary, "inner": cli.model.inner,
             "start": cli.model.start, **{type(c).__name__: c for c in cli.trainer.callbacks}}
    used = [name for name, part in parts.items() if f"{type(part).__module__}.{type(part).__name__}" in text
            and type(part).__module__.startswith("farzi_lightning.examples.")]
    assert used, "the example's class was not built"
    assert all(torch.isfinite(p).all() for p in cli.model.summary.parameters())
    if "SummarySnapshots" in text:
        snapshots = sorted(tmp_path.glob("**/lightning_logs/version_*/checkpoints/snapshots/summary-*.pt"))
        assert [p.name for p in snapshots[-2:]] == ["summary-000001.pt", "summary-000002.pt"]


def unrolled_nesterov(lr, momentum, steps, inner_loss, outer_loss, params, hyper):
    theta = {k: p.clone().requires_grad_(True) for k, p in params.items()}
    buf = {k: torch.zeros_like(p) for k, p in params.items()}
    for t in range(steps):
        loss = inner_loss(theta, hyper, t)
        grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
        buf = {k: momentum * buf[k] + g for (k, g) in zip(theta, grads)}
        theta = {k: theta[k] - lr * (g + momentum * buf[k]) for (k, g) in zip(list(theta), grads)}
    return torch.autograd.grad(outer_loss(theta), hyper)


@pytest.mark.parametrize("steps", [1, 7])
def test_reverse_nesterov_is_exact_and_its_twin_is_torch(steps):
    got = ReverseNesterov(lr=0.05, momentum=0.9, steps=steps).meta_gradient(*transformer_problem())
    inner_loss, outer_loss, params, hyper = transformer_problem()
    want = unrolled_nesterov(0.05, 0.9, steps, inner_loss, outer_loss, params, hyper)
    assert rel_error(got.grads, want) <= 1e-9
    opt = ReverseNesterov(lr=0.05, momentum=0.9, steps=3)
    start = torch.randn(5, dtype=torch.float64)
    grads = [torch.randn(5, dtype=torch.float64) for _ in range(3)]
    state = State({"p": start.clone()}, opt.init_buffers({"p": start}))
    p = nn.Parameter(start.clone())
    twin = opt.torch_optimizer([p])
    for t, g in enumerate(grads, 1):
        state = opt.step(state, {"p": g.clone()}, t)
        p.grad = g.clone()
        twin.step()
    torch.testing.assert_close(state.params["p"], p.detach(), rtol=1e-14, atol=1e-14)


def test_parts_that_break_their_contract_fail_when_built():
    class NoMaxLen(Learner):
        def __init__(self, vocab_size: int) -> None:
            super().__init__()
            self.vocab_size, self.padding_idx = vocab_size, None
            self.head = nn.Linear(2, vocab_size)

        def forward(self, tokens):
            return self.head(tokens)

    with pytest.raises(TypeError, match="NoMaxLen breaks the Learner contract: it has no max_len"):
        NoMaxLen(5)

    class NoForward(Learner):
        def __init__(self, vocab_size: int) -> None:
            super().__init__()

    with pytest.raises(TypeError, match="abstract method '?forward"):
        NoForward(5)

    class NoLogits(Summary):
        pass

    with pytest.raises(TypeError, match="abstract method '?logits"):
        NoLogits(5, 2, 3)

    with pytest.raises(TypeError, match="model.init_args.learner: Linear is not a farzi_lightning.learners.Learner"):
        FarziLightningModule(nn.Linear(2, 2), lambda v: None, ReverseAdam())


def test_data_without_the_distillation_members_is_refused_at_setup():
    from farzi_lightning.contracts import DATA, require

    class Half:
        vocab_size = 5

        def train_dataloader(self):
            return []

    with pytest.raises(TypeError, match=r"data: Half breaks the distillation data contract: it has no "
                                        r"fingerprint, real_sequences, vocabulary, train_counts, val_dataloader"):
        require(Half(), DATA, "distillation data", "data")


def test_a_distillation_takes_its_learner_from_the_bank(tmp_path, monkeypatch, data_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FARZI_DATA_DIR", str(data_dir))
    distil = ROOT / "configs" / "ml100k.yaml"
    run("fit", config=bank_maker(distil))
    from_bank = tmp_path / "from_bank.yaml"
    from_bank.write_text("model:\n  init_args:\n    learner:\n      class_path: farzi_lightning.learners.BankLearner\n"
                         "      init_args:\n        path: runs/tiny/banks/ml100k_sasrec\n")
    cli = run("fit", "--config", str(from_bank), "--trainer.max_steps=1", *SHORT_DOWNSTREAM,
              "--model.init_args.teacher=runs/tiny/banks/ml100k_sasrec", config=distil, tiny=False)
    bank = __import__("json").loads((tmp_path / "runs/tiny/banks/ml100k_sasrec/manifest.json").read_text())
    assert cli.model.learner.config() == bank["learner"]  # the tiny pretrain's SASRec, width 16
    assert type(cli.model.learner).__name__ == "SASRec" and cli.model.learner.config()["init_args"]["d_model"] == 16
