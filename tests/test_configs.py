"""Every config in configs/ loads, and runs for a few steps with the tiny override (fit, then test)."""

from __future__ import annotations

import pytest
import yaml
from hand_metrics import learner_metric, popularity_hr, unigram_ppl

from farzi_lightning.cli import TINY as TINY_CAPS
from farzi_lightning.cli import build

from cli_utils import ABLATIONS, CONFIGS, ROOT, SHORT_DOWNSTREAM, run


def yaml_value(config, key: str):
    """The value at a dotted ``key`` of a YAML config."""
    node = yaml.safe_load(config.read_text())
    for part in key.split("."):
        node = node[part]
    return node


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
    runs_tiny(config, tmp_path, monkeypatch, data_dir)


@pytest.mark.parametrize("config", ["ml100k.yaml", "ptb.yaml"])
def test_config_runs_tiny_on_the_real_data(config, tmp_path, monkeypatch, real_data_dir):
    """The real-data layer: each data set's distillation config, fit then test, on the real files (checksums
    verified); every other end-to-end test reads the stand-ins."""
    runs_tiny(ROOT / "configs" / config, tmp_path, monkeypatch, real_data_dir)


def runs_tiny(config, tmp_path, monkeypatch, data_dir) -> None:
    """Fit ``config`` with its tiny caps (and the bank it reads first), then test its last checkpoint; the
    reported metrics against hand computations."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FARZI_DATA_DIR", str(data_dir))
    if (pretrain := bank_maker(config)) is not None:
        run("fit", config=pretrain)  # a tiny bank of the tiny learner, as the distillation config expects
    cli = run("fit", config=ROOT / config)  # the tiny override's own caps, nothing passed by hand
    assert cli.trainer.global_step > 0
    if pretrain is not None:  # a distillation: each cap of `tiny: true` holds (PTB's summary is 200 x 36 x 10,000)
        built = {"model.init_args.inner_optimizer.init_args.steps": cli.model.inner.steps,
                 "model.init_args.summary.init_args.num_sequences": cli.model.summary.num_sequences,
                 "model.init_args.inner_batch_size": cli.model.hparams.inner_batch_size,
                 "model.init_args.downstream.init_args.steps": cli.model.downstream.steps,
                 "model.init_args.downstream.init_args.seeds": cli.model.downstream.seeds,
                 "model.init_args.downstream.init_args.eval_every": cli.model.downstream.eval_every,
                 "model.init_args.downstream.init_args.val_batches": cli.model.downstream.val_batches}
        if hasattr(cli.model.start, "max_steps"):
            built["model.init_args.start.init_args.max_steps"] = cli.model.start.max_steps
        for key, value in built.items():
            assert value is None or value <= TINY_CAPS[key], (key, value)  # None: set from T or the inner batch
        assert cli.model.summary.num_sequences < yaml_value(config, "model.init_args.summary.init_args.num_sequences")
    short = SHORT_DOWNSTREAM if pretrain else []
    ckpt = max(tmp_path.glob("**/lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    tested = run("test", f"--ckpt_path={ckpt}", *short, config=ROOT / config)
    metrics, data = tested.trainer.callback_metrics, tested.datamodule
    if pretrain is None:  # a learner: its test metric against a hand computation from its full forward pass
        name, value = learner_metric(tested.model.learner, data, max_batches=tested.trainer.limit_test_batches)
        assert float(metrics[f"test/{name}"]) == pytest.approx(value, rel=1e-4)
    else:  # a distillation: every test candidate reported, the count floor equal to a hand computation
        text = hasattr(data, "streams")
        learner = type(tested.model.learner).__name__.lower()
        floor = ("unigram", "ppl", unigram_ppl) if text else ("popularity", "hr@10", lambda d: popularity_hr(d.split))
        candidates = tested.model.downstream.candidates
        assert floor[0] in candidates and "summary" in candidates
        for candidate in candidates:
            if candidate not in ("unigram", "popularity") or candidate == floor[0]:
                assert f"downstream/{learner}/{candidate}/{floor[1]}" in metrics, sorted(metrics)
        reported = float(metrics[f"downstream/{learner}/{floor[0]}/{floor[1]}"])
        assert reported == pytest.approx(floor[2](data), rel=1e-4)


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
        elif not isinstance(value, dict):  # a plain setting such as input_mode or outer_batch_size
            assert cli.model.hparams[key] == value, key
        elif "init_args" in value:  # init_args merged into the base's class (an outer lr, a schedule's length)
            for arg, setting in value["init_args"].items():
                assert cli.model.hparams[key]["init_args"][arg] == setting, (key, arg)
