"""Every config in configs/ loads, and runs for a few steps with the tiny override (fit, then test)."""

from __future__ import annotations

import pytest
from cli_utils import CONFIGS, ROOT, run

from farzi_lightning.cli import build


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
    cli = run("fit", config=ROOT / config)
    assert cli.trainer.global_step > 0
    ckpt = next(tmp_path.glob("lightning_logs/version_0/checkpoints/last.ckpt"))
    tested = run("test", f"--ckpt_path={ckpt}", config=ROOT / config)
    metrics = tested.trainer.callback_metrics
    assert any(k.startswith("test/") for k in metrics), metrics
