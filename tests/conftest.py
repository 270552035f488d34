"""Shared fixtures: where the real data sets live, and small problems for the inner optimisers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$FARZI_DATA_DIR`` or ``../shared/data``; under CI a missing directory is a failure, never a skip."""
    path = Path(os.environ.get("FARZI_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (path / "ptb").is_dir() or not (path / "ml-100k").is_dir():
        message = f"real data not found under {path} (set FARZI_DATA_DIR to a folder holding ptb/ and ml-100k/)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _seed_and_argv(monkeypatch) -> None:
    torch.manual_seed(0)
    monkeypatch.setattr("sys.argv", ["farzi"])  # in-process CLI runs get their arguments from args=
