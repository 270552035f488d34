"""Shared fixtures: where the real data sets live, and small problems for the inner optimisers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from small_data import write_standins

ROOT = Path(__file__).resolve().parents[1]


def _real() -> Path | None:
    path = Path(os.environ.get("FARZI_DATA_DIR", ROOT.parent / "shared" / "data"))
    return path if (path / "ptb").is_dir() and (path / "ml-100k").is_dir() else None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """``$FARZI_DATA_DIR`` or ``../shared/data``, for the tests of the real data sets themselves; under CI a
    missing directory is a failure, elsewhere a skip."""
    path = _real()
    if path is None:
        message = "real data not found (set FARZI_DATA_DIR to a folder holding ptb/ and ml-100k/)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Where the end-to-end tests read ``ml-100k/`` and ``ptb/``: the real data when present, else (and with
    ``FARZI_TEST_DATA=generated``) stand-ins written here, so a fresh clone runs every path offline."""
    path = _real()
    if path is not None and os.environ.get("FARZI_TEST_DATA") != "generated":
        return path
    if os.environ.get("CI") and os.environ.get("FARZI_TEST_DATA") != "generated":
        pytest.fail("real data not found under CI (set FARZI_DATA_DIR to a folder holding ptb/ and ml-100k/)")
    os.environ["FARZI_VERIFY"] = "0"  # stand-ins carry the canonical names, not the canonical bytes
    return write_standins(tmp_path_factory.mktemp("standins"))


@pytest.fixture(autouse=True)
def _seed_and_argv(monkeypatch) -> None:
    torch.manual_seed(0)
    monkeypatch.setattr("sys.argv", ["farzi"])  # in-process CLI runs get their arguments from args=
