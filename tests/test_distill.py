"""FarziLightningModule end to end through the `farzi` CLI: fit, checkpoint, export, TensorBoard, test, resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from hand_metrics import popularity_hr
from lightning.pytorch import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from farzi_lightning import load_summary
from farzi_lightning.callbacks import DownstreamEvaluation
from farzi_lightning.cli import build
from farzi_lightning.export import vocabulary_of
from farzi_lightning.outer import OuterStep

from cli_utils import ROOT, SHORT_DOWNSTREAM, run, working_in

PRETRAIN, DISTIL = ROOT / "configs" / "ml100k_pretrain.yaml", ROOT / "configs" / "ml100k.yaml"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, module_data_dir):
    """A folder holding a tiny ML-100k trajectory bank (runs/tiny/banks/ml100k_sasrec), used as the cwd."""
    with working_in(tmp_path_factory.mktemp("distil"), module_data_dir) as root:
        run("fit", config=PRETRAIN)
    return root


@pytest.fixture
def in_workdir(workdir, monkeypatch, data_dir):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("FARZI_DATA_DIR", str(data_dir))
    return workdir


class CaptureStart(Callback):
    def on_train_start(self, trainer, pl_module):
        self.start = {k: v.detach().clone() for k, v in pl_module.summary.state_dict().items()}


def fit(*args: str):
    cli = run("fit", "--trainer.max_steps=3", *SHORT_DOWNSTREAM, *args, config=DISTIL)
    return cli, Path(cli.trainer.log_dir)


def test_fit_updates_summary_exports_and_logs(in_workdir):
    # summary.pt dense (every probability: exact); the compact forms the config uses are tested in test_evaluation
    cli = build(["--config", str(DISTIL), "--config", str(ROOT / "configs/overrides/tiny.yaml"),
                 "--trainer.max_steps=3", "--model.init_args.summary_rank=null", *SHORT_DOWNSTREAM], run=False)
    capture = CaptureStart()
    cli.trainer.callbacks.append(capture)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 3  # global_step counts outer steps
    end = cli.model.summary.state_dict()
    assert any(not torch.equal(capture.start[k], end[k]) for k in end)
    log_dir = Path(cli.trainer.log_dir)
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    exported = torch.load(log_dir / "checkpoints" / "summary.pt", weights_only=True)
    assert exported["tokens"].shape == (10, 51) and len(vocabulary_of(exported)) == 1683  # tiny: 10 sequences
    assert torch.equal(exported["tokens"], cli.model.summary.decode())
    # Self-describing: the Summary, its feed, the learner and the downstream recipe from the file alone.
    loaded = load_summary(log_dir / "checkpoints" / "summary.pt")
    assert type(loaded) is type(cli.model.summary)
    torch.testing.assert_close(loaded(), cli.model.summary(), rtol=0, atol=0)
    assert loaded.feed.config() == cli.model.feed.config() and loaded.learner_config == cli.model.learner.config()
    assert loaded.recipe["steps"] == 10 and loaded.recipe["optimizer"] == "adam"
    text = (log_dir / "checkpoints" / "summary.txt").read_text().splitlines()
    assert len(text) == 10 and all(len(line.split()) == 51 for line in text)  # original item ids
    events = EventAccumulator(str(log_dir)).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/outer_loss", "train/inner_loss", "train/meta_grad_norm", "train/drift",
                "summary/entropy", "summary/effective_vocab", "time/seconds_per_step"):
        assert tag in scalars, tag
    assert len(events.Scalars("train/outer_loss")) == 3
    assert len(events.Scalars("downstream/sasrec/summary/hr@10")) == 2  # DownstreamEvaluation: start and end


def test_downstream_callback_leaves_the_distillation_unchanged(in_workdir):
    summaries = []
    for every in (1, None):
        cli = build(["--config", str(DISTIL), "--config", str(ROOT / "configs/overrides/tiny.yaml"),
                     "--trainer.max_steps=3", *SHORT_DOWNSTREAM], run=False)
        callbacks = [c for c in cli.trainer.callbacks if isinstance(c, DownstreamEvaluation)]
        assert len(callbacks) == 1
        if every is None:
            cli.trainer.callbacks.remove(callbacks[0])
        else:
            callbacks[0].every_n_steps = every
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        summaries.append(cli.model.summary.state_dict())
        if every is not None:
            assert [h["step"] for h in callbacks[0].history] == [0, 1, 2, 3]
            # what the distillation has cost at each evaluation (outer steps only), carried by its state
            for key in ("fit_seconds", "cpu_seconds"):
                spent = [h[key] for h in callbacks[0].history]
                assert spent[0] == 0 and all(a < b for a, b in zip(spent, spent[1:])), (key, spent)
            restored = DownstreamEvaluation()
            restored.load_state_dict(callbacks[0].state_dict())
            assert restored.spent == callbacks[0].spent and restored.history == callbacks[0].history
    for k, v in summaries[0].items():
        torch.testing.assert_close(summaries[1][k], v, rtol=0, atol=0)


def test_farzi_test_trains_fresh_learners_and_reports_real_metrics(in_workdir):
    cli, log_dir = fit()
    tested = run("test", f"--ckpt_path={log_dir / 'checkpoints' / 'last.ckpt'}", *SHORT_DOWNSTREAM, config=DISTIL)
    metrics = tested.trainer.callback_metrics
    for name in ("summary", "random", "head", "popularity"):
        assert 0.0 <= float(metrics[f"downstream/sasrec/{name}/hr@10"]) <= 1.0
        assert float(metrics[f"downstream/sasrec/{name}/ndcg@10"]) <= float(metrics[f"downstream/sasrec/{name}/hr@10"])
    assert "downstream/sasrec/unigram/ppl" not in metrics  # the text floor does not apply to interactions
    hand = popularity_hr(tested.datamodule.split)  # ranked by hand from the split (tests/hand_metrics.py)
    assert float(metrics["downstream/sasrec/popularity/hr@10"]) == pytest.approx(hand, abs=1e-6)
    # Paired differences: the mean of per-seed differences is the difference of the means.
    for name in ("random", "head", "popularity"):
        expected = float(metrics["downstream/sasrec/summary/hr@10"]) - float(metrics[f"downstream/sasrec/{name}/hr@10"])
        assert float(metrics[f"paired/sasrec/summary-{name}/hr@10"]) == pytest.approx(expected, abs=1e-6)


OUTER_OPTIONS = ("--model.init_args.outer_loss=farzi_lightning.outer_losses.TeacherKL",
                 "--model.init_args.gradient_clip_relative=1.5", "--model.init_args.outer_batch_size=12",
                 "--model.init_args.share_real_batch=true", "--model.init_args.meta_batch_size=2")


@pytest.mark.parametrize("options", [(), OUTER_OPTIONS], ids=["default", "teacher_kl_relative_clip_shared_batch"])
def test_resume_is_exact(in_workdir, options):
    # Stop mid-epoch (3 of 6 batches): everything random in an outer step is drawn from (seed, step); the
    # running norm of relative clipping travels in the checkpoint.
    common = ("--trainer.max_epochs=2", *options)
    straight, _ = fit(*common, "--trainer.max_steps=5")
    first, first_dir = fit(*common, "--trainer.max_steps=3")
    resumed = run("fit", *common, "--trainer.max_steps=5", f"--ckpt_path={first_dir / 'checkpoints' / 'last.ckpt'}",
                  config=DISTIL)
    assert resumed.trainer.global_step == 5
    for k, v in straight.model.summary.state_dict().items():
        torch.testing.assert_close(resumed.model.summary.state_dict()[k], v, rtol=0, atol=0)
    assert not torch.equal(first.model.summary.z, straight.model.summary.z)


def test_bad_configs_fail_before_training_naming_the_key(in_workdir, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"summary.init_args.seq_len=60 needs .*learner.init_args.max_len=50"):
        fit("--model.init_args.summary.init_args.seq_len=60")
    bank = tmp_path / "bank"
    bank.mkdir()
    (bank / "manifest.json").write_text(json.dumps({"vocab_size": 5, "fingerprint": "x", "entries": []}))
    with pytest.raises(ValueError, match=r"model.init_args.teacher: .*vocab_size=5.*1683"):
        fit(f"--model.init_args.teacher={bank}")
    with pytest.raises(ValueError, match=r"model.init_args.gradient_clip_val must be positive"):
        fit("--model.init_args.gradient_clip_val=-1")
    with pytest.raises(SystemExit):
        fit("--model.init_args.input_mode=gumbel")
    assert "input_mode" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fit("--model.init_args.summary.class_path=farzi_lightning.summaries.NoSuchSummary")
    assert "NoSuchSummary" in capsys.readouterr().err


def test_learnt_inner_lr_moves_along_its_meta_gradient(in_workdir):
    cli, _ = fit("--model.init_args.learn_inner_lr=true")
    lr = float(cli.model.log_inner_lr.exp())
    assert cli.model.log_inner_lr.requires_grad and lr != pytest.approx(0.005, rel=1e-6)  # configs/ml100k.yaml's
    assert cli.model.inner.lr == pytest.approx(lr)  # what downstream training (and summary.pt's recipe) uses
    fixed, _ = fit()
    assert not fixed.model.log_inner_lr.requires_grad and fixed.model.inner.lr == 0.005


class Snapshots(Callback):
    def __init__(self):
        self.summaries = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.summaries.append(pl_module.summary.z.detach().clone())


@pytest.mark.parametrize("what", ["gradient", "loss"])
def test_nonfinite_steps_leave_the_summary_and_too_many_stop_with_a_checkpoint(in_workdir, monkeypatch, what):
    real_draw = OuterStep.draw
    bad, calls = {1}, []

    def draw(self, generator, real, shared=None):  # one draw per outer step: call i is outer step i
        result = real_draw(self, generator, real, shared)
        step = len(calls)
        calls.append(step)
        if step in bad or "all" in bad:
            if what == "gradient":
                return dataclasses.replace(result, grads=tuple(torch.full_like(g, float("nan")) for g in result.grads))
            return dataclasses.replace(result, outer_loss=torch.tensor(float("inf")))
        return result

    monkeypatch.setattr(OuterStep, "draw", draw)
    cli = build(["--config", str(DISTIL), "--config", str(ROOT / "configs/overrides/tiny.yaml"),
                 "--trainer.max_steps=3", *SHORT_DOWNSTREAM], run=False)
    snapshots = Snapshots()
    cli.trainer.callbacks.append(snapshots)
    with pytest.warns(UserWarning, match="outer step 1: non-finite meta-gradient or loss"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    first, skipped, third = snapshots.summaries
    assert torch.equal(first, skipped) and not torch.equal(skipped, third)  # step 1 left it as it was
    assert torch.isfinite(third).all() and cli.trainer.global_step == 3
    assert float(cli.trainer.logged_metrics["train/skipped_steps"]) == 1.0
    bad.add("all")
    with pytest.raises(ValueError, match=r"max_nonfinite_steps: 2 outer steps in a row .* saved in .*nonfinite.ckpt"):
        fit("--model.init_args.max_nonfinite_steps=2")
    saved = sorted(Path(in_workdir).glob("**/lightning_logs/version_*/checkpoints/nonfinite.ckpt"))[-1]
    assert torch.load(saved, weights_only=True)["global_step"] == 1
