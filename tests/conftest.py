"""Shared fixtures: where the real data sets live, and small problems for the inner optimisers."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

from small_data import write_standins

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # ``pytest -n 2`` (the default, pyproject.toml): two workers on two cores. One thread each, and for the CLI
    # runs they start, so the workers never oversubscribe the machine (torch's default is a thread per core).
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


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
def _data_root(tmp_path_factory) -> tuple[Path, bool]:
    """(where the end-to-end tests' data is, whether it is generated stand-ins). Stand-ins unless
    ``FARZI_TEST_DATA=real``: the real files have a layer of their own (``real_data_dir``), and every other path
    runs on data the tests write, the same on every machine."""
    if os.environ.get("FARZI_TEST_DATA") != "real":
        return write_standins(tmp_path_factory.mktemp("standins")), True
    path = _real()
    if path is None:
        pytest.fail("FARZI_TEST_DATA=real but no real data (set FARZI_DATA_DIR to a folder holding ptb/ and ml-100k/)")
    return path, False


@pytest.fixture
def data_dir(_data_root, monkeypatch) -> Path:
    """Where the end-to-end tests read ``ml-100k/`` and ``ptb/``: stand-ins written once per session, so every
    path runs offline on any machine (``FARZI_TEST_DATA=real``: the real data instead). With stand-ins,
    ``FARZI_VERIFY=0`` for this test only (they carry the canonical names, not the canonical bytes)."""
    path, generated = _data_root
    if generated:
        monkeypatch.setenv("FARZI_VERIFY", "0")
    return path


@pytest.fixture(scope="module")
def module_data_dir(_data_root):
    """``data_dir`` for module-scoped fixtures (banks and runs shared by a file's tests): ``FARZI_VERIFY=0`` with
    stand-ins until the module's last test ends."""
    path, generated = _data_root
    with pytest.MonkeyPatch.context() as patch:
        if generated:
            patch.setenv("FARZI_VERIFY", "0")
        yield path


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """Every test starts from torch seed 0 and ``sys.argv == ["farzi"]`` (in-process CLI runs take args=), and
    leaves no trace: the environment (``PL_GLOBAL_SEED`` set by ``seed_everything``, ``FARZI_*``) and the
    global RNGs are restored afterwards, so results do not depend on test order."""
    environ, torch_rng, python_rng = dict(os.environ), torch.get_rng_state(), random.getstate()
    torch.manual_seed(0)
    monkeypatch.setattr("sys.argv", ["farzi"])
    yield
    os.environ.clear()
    os.environ.update(environ)
    torch.set_rng_state(torch_rng)
    random.setstate(python_rng)
