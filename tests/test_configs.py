"""Every config in configs/ loads, and runs for a few steps with the tiny override (fit, then test)."""

from __future__ import annotations

import pytest
import yaml

from farzi_lightning.cli import build

from cli_utils import ABLATIONS, CONFIGS, ROOT, SHORT_DOWNSTREAM, run


def bank_maker(config):
    """The pretrain config whose TrajectoryCheckpoint writes the bank that ``config`` reads (None: reads none)."""
    init_args = yaml.safe_load(config.read_text())["model"]["init_args"]
    start, bank = init_args.get("start"), init_args.get("teacher")
    if isinstance(bank, dict):  # a farzi_lightning.Teacher: its first bank
        bank = bank["init_args"]["banks"][0]
    while bank is None and start is not None:
        bank = start.get("init_args", {}).get("path")
        start = start.get("init_args", {}).get("start")  # a wrapper such as SummaryWarmStart
    if bank is None:
        return None
    for other in CONFIGS:
        callbacks = yaml.safe_load(other.read_text()).get("trainer", {}).get("callbacks", [])
        writers = [c for c in callbacks if c["class_path"].endswith("TrajectoryCheckpoint")]
        if any(c["init_args"].get("dirpath") == bank for c in writers):
            return other
    raise AssertionError(f"{config.name}: no config in configs/ writes the bank {bank}")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_prints(config, capsys):
    with pytest.raises(SystemExit) as exit_:
        build(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path" in printed and "trainer:" in printed


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_header_says_how_to_run_it(config):
    header = [line for line in config.read_text().splitlines() if line.startswith("#")]
    assert any(f"farzi fit --config configs/{config.name}" in line for line in header)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_runs_tiny(config, tmp_path, monkeypatch, data_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FARZI_DATA_DIR", str(data_dir))
    if (pretrain := bank_maker(config)) is not None:
        run("fit", config=pretrain)  # a tiny bank of the tiny learner, as the distillation config expects
    # Distillation: a 10-sequence summary (PTB's token summary is 72M logits at full size) and brief downstream
    # training.
    short = [*SHORT_DOWNSTREAM, "--model.init_args.summary.init_args.num_sequences=10"] if pretrain else []
    cli = run("fit", *short, config=ROOT / config)
    assert cli.trainer.global_step > 0
    ckpt = max(tmp_path.glob("**/lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    tested = run("test", f"--ckpt_path={ckpt}", *short, config=ROOT / config)
    metrics = tested.trainer.callback_metrics
    assert any(k.startswith(("test/", "downstream/")) for k in metrics), metrics


def ablation_base(ablation):
    """The base config an ablation's header stacks it on."""
    for line in ablation.read_text().splitlines():
        if line.startswith("#") and "farzi fit --config configs/" in line:
            return ROOT / line.split("--config ")[1].split()[0]
    raise AssertionError(f"{ablation.name}: the header names no base config")


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda p: p.name)
def test_ablation_is_a_small_override_that_runs(ablation, tmp_path, monkeypatch, data_dir):
    base = ablation_base(ablation)
    assert f"--config configs/{base.name} --config configs/ablations/{ablation.name}" in ablation.read_text()
    assert len(ablation.read_text().splitlines()) < 25  # the change, not a copy of the base
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FARZI_DATA_DIR", str(data_dir))
    run("fit", config=bank_maker(base))
    cli = run("fit", "--config", str(ablation), "--trainer.max_steps=2", *SHORT_DOWNSTREAM, config=base)
    assert cli.trainer.global_step == 2
    overridden = yaml.safe_load(ablation.read_text())["model"]["init_args"]
    for key, value in overridden.items():
        if isinstance(value, dict) and "class_path" in value:
            built = getattr(cli.model, {"inner_optimizer": "inner"}.get(key, key), None)
            if built is not None and key != "optimizer":
                assert type(built).__name__ == value["class_path"].rpartition(".")[2]
