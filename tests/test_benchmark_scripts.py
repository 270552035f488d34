"""Benchmark scripts that summarise logged runs, checked against values computed by hand."""

import importlib.util
import sys
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(run: Path, outer: list[float], valid: dict[int, float]) -> None:
    writer = SummaryWriter(str(run / "lightning_logs" / "version_0"))
    for step, value in enumerate(outer):  # outer step s + 1 is logged at global step s
        writer.add_scalar("train/outer_loss", value, step)
        writer.add_scalar("train/meta_grad_norm", 0.01 * (step + 1), step)
    for step, value in valid.items():
        writer.add_scalar("downstream/sasrec/summary/hr@10", value, step)
    writer.close()


def test_outer_curves_averages_blocks_and_pairs_changes_by_seed(tmp_path, monkeypatch, capsys):
    outer_curves = load("outer_curves")
    write_run(tmp_path / "seed-0", [5.0, 4.0, 3.0, 3.0, 2.0, 2.0], {0: 0.10, 2: 0.12, 4: 0.13, 6: 0.11})
    write_run(tmp_path / "seed-1", [6.0, 6.0, 5.0, 3.0, 4.0, 2.0], {0: 0.20, 2: 0.20, 4: 0.24, 6: 0.23})
    monkeypatch.setattr(sys, "argv", ["outer_curves", str(tmp_path), "--seeds", "0", "1", "--block", "2",
                                      "--steps", "6"])
    outer_curves.main()
    lines = capsys.readouterr().out.splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    rows = {row[0]: row for row in cells}
    # seed 0's blocks: 4.5, 3.0, 2.0; seed 1's: 6.0, 4.0, 3.0 -> means 5.25, 3.5, 2.5
    assert rows["1–2"][1] == "5.2500"
    assert rows["3–4"][1] == "3.5000" and rows["3–4"][2].startswith("-1.75 [")  # (−1.5 − 2.0) / 2
    assert rows["5–6"][1] == "2.5000" and rows["5–6"][2].startswith("-2.75 [")
    assert rows["5–6"][3] == "0.0550"  # norms 0.05, 0.06 in both seeds
    assert rows["0 (start)"][4] == "0.1500" and rows["3–4"][4] == "0.1850"
    assert rows["3–4"][5].startswith("+0.035 [")  # (0.03 + 0.04) / 2
    last = lines[-1]
    assert last.startswith("outer loss, last block − block 2: -1 [")  # 2.0 − 3.0 and 3.0 − 4.0
    assert "end − block 2's end: -0.015 [" in last  # (0.11 − 0.13 + 0.23 − 0.24) / 2


def test_outer_curves_names_a_run_without_logs(tmp_path, monkeypatch):
    outer_curves = load("outer_curves")
    (tmp_path / "seed-3").mkdir()
    monkeypatch.setattr(sys, "argv", ["outer_curves", str(tmp_path), "--seeds", "3"])
    with pytest.raises(SystemExit, match="seed-3: no lightning_logs"):
        outer_curves.main()


def test_outer_curves_names_what_a_run_did_not_log(tmp_path, monkeypatch):
    outer_curves = load("outer_curves")
    write_run(tmp_path / "seed-0", [5.0, 4.0], {0: 0.1, 2: 0.2})
    monkeypatch.setattr(sys, "argv", ["outer_curves", str(tmp_path), "--seeds", "0", "--block", "1", "--steps", "2"])
    with pytest.raises(SystemExit, match=r"seed-0: validation not logged at every step of \[0, 1, 2\]"):
        outer_curves.main()
    monkeypatch.setattr(sys, "argv", ["outer_curves", str(tmp_path), "--seeds", "0", "--learner", "gru"])
    with pytest.raises(SystemExit, match="no downstream/gru/summary/hr@10 logged"):
        outer_curves.main()
