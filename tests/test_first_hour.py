"""A newcomer's first hour: the README's commands as written, checkpoints that load from the file alone,
settings visible in HPARAMS, float64 end to end, files that honour the umask, validate and predict."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from farzi_lightning import FarziLightningModule, LearnerModule
from farzi_lightning.cli import main

from cli_utils import ROOT, SHORT_DOWNSTREAM, run, working_in

PRETRAIN, DISTIL = ROOT / "configs" / "ml100k_pretrain.yaml", ROOT / "configs" / "ml100k.yaml"


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Distil a data set", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_quickstart_runs_as_written(tmp_path, data_dir, monkeypatch, capsys):
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "configs", clone / "configs")  # a fresh clone's configs, nothing else
    monkeypatch.chdir(clone)
    farzi = [c for c in readme_commands() if c.startswith("farzi ")]
    assert len(farzi) >= 5 and any(c.startswith("source .venv/bin/activate") for c in readme_commands())
    for command in readme_commands():
        if command.startswith("export FARZI_DATA_DIR="):
            monkeypatch.setenv("FARZI_DATA_DIR", str(data_dir))
        elif command.startswith("farzi "):
            argv = shlex.split(command)[1:] + ["--config", "configs/overrides/tiny.yaml"]
            main(argv)  # raises SystemExit on any error
    assert "downstream/sasrec/summary/hr@10" in capsys.readouterr().out  # farzi test printed its metrics
    predictions = list(clone.glob("runs/tiny/ml100k/lightning_logs/version_*/predictions.txt"))
    assert predictions and len(predictions[0].read_text().splitlines()) == 10


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, module_data_dir):
    with working_in(tmp_path_factory.mktemp("hour"), module_data_dir) as root:
        pre = run("fit", config=PRETRAIN)
        distil = run("fit", "--trainer.max_steps=2", *SHORT_DOWNSTREAM, config=DISTIL)
    return root, pre, distil


def test_both_modules_load_from_the_checkpoint_alone(fitted):
    root, pre, distil = fitted
    x = torch.randint(1, 100, (3, 7))
    ckpt = next(root.glob("runs/tiny/ml100k_pretrain/**/last.ckpt"))
    loaded = LearnerModule.load_from_checkpoint(ckpt).eval()
    assert torch.equal(loaded(x), pre.model.eval()(x))
    ckpt = root / distil.trainer.log_dir / "checkpoints" / "last.ckpt"
    model = FarziLightningModule.load_from_checkpoint(ckpt)
    assert torch.equal(model.summary(), distil.model.summary())
    assert model.learner.config() == distil.model.learner.config()
    assert model.inner.config() == distil.model.inner.config()
    assert type(model.start).__name__ == "SummaryWarmStart" and model.downstream.steps == 10


def test_hparams_show_every_setting_and_hp_metric_is_the_downstream_metric(fitted):
    root, _, distil = fitted
    log_dir = root / distil.trainer.log_dir
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert hparams["inner_optimizer"]["init_args"]["steps"] == 5  # T (tiny)
    assert hparams["inner_optimizer"]["init_args"]["lr"] == 0.005
    assert hparams["summary"]["init_args"]["num_sequences"] == 10 and hparams["summary"]["init_args"]["seq_len"] == 51
    assert hparams["learner"]["init_args"]["d_model"] == 16
    events = EventAccumulator(str(log_dir))
    events.Reload()
    hp = [e.value for e in events.Scalars("hp_metric")]
    ndcg = [e.value for e in events.Scalars("downstream/sasrec/summary/ndcg@10")]
    assert hp[-1] != -1 and hp[-1] == pytest.approx(ndcg[-1])


def test_float64_end_to_end(tmp_path, data_dir, monkeypatch):
    with working_in(tmp_path, data_dir):
        run("fit", config=PRETRAIN)
        cli = run("fit", "--trainer.precision=64-true", "--trainer.max_steps=2", *SHORT_DOWNSTREAM, config=DISTIL)
    assert cli.trainer.global_step == 2
    assert all(p.dtype == torch.float64 for p in cli.model.summary.parameters())
    assert all(p.dtype == torch.float64 for p in cli.model.learner.parameters())


def test_written_files_honour_the_umask(tmp_path, data_dir):
    old = os.umask(0o027)
    try:
        with working_in(tmp_path, data_dir):
            run("fit", config=PRETRAIN)
            cli = run("fit", "--trainer.max_steps=1", *SHORT_DOWNSTREAM, config=DISTIL)
    finally:
        os.umask(old)
    exported = tmp_path / cli.trainer.log_dir / "checkpoints"
    bank = tmp_path / "runs" / "tiny" / "banks" / "ml100k_sasrec"
    for path in (exported / "summary.pt", exported / "summary.txt", bank / "manifest.json",
                 next(bank.glob("seed-0/step-*.pt"))):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_validate_and_predict_do_what_the_readme_says(fitted, capsys, monkeypatch, caplog, data_dir):
    root, pre, distil = fitted
    monkeypatch.chdir(root)
    monkeypatch.setenv("FARZI_DATA_DIR", str(data_dir))
    main(["validate", "--config", str(DISTIL), "--config", str(ROOT / "configs/overrides/tiny.yaml"),
          "--ckpt_path", "last", *SHORT_DOWNSTREAM])
    assert "Downstream evaluation on the validation split" in caplog.text
    assert re.search(r"downstream/sasrec/summary/ndcg@10\s*│", capsys.readouterr().out)
    main(["predict", "--config", str(DISTIL), "--config", str(ROOT / "configs/overrides/tiny.yaml"),
          "--ckpt_path", "last"])
    written = sorted(root.glob("runs/tiny/ml100k/lightning_logs/version_*/predictions.txt"))[-1]
    rows = written.read_text().splitlines()
    assert rows == [distil.datamodule.decode(r) for r in distil.model.summary.decode()]
    with pytest.raises(SystemExit):
        main(["predict", "--config", str(PRETRAIN), "--config", str(ROOT / "configs/overrides/tiny.yaml")])
    assert "farzi predict decodes a distilled summary" in capsys.readouterr().err
