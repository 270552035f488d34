"""Running the ``farzi`` CLI in-process from tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from farzi_lightning.cli import build

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml"))
ABLATIONS = sorted((ROOT / "configs" / "ablations").glob("*.yaml"))  # overrides stacked on a base config
TINY = ROOT / "configs" / "overrides" / "tiny.yaml"
# Downstream evaluation of a distillation config in seconds: 10 steps, one seed.
SHORT_DOWNSTREAM = ["--model.init_args.downstream.init_args.steps=10", "--model.init_args.downstream.init_args.seeds=1",
                    "--model.init_args.downstream.init_args.eval_every=5"]


def run(*args: str, config: Path | None = None, tiny: bool = True):
    """``farzi <args> --config CONFIG [--config tiny.yaml]``, in-process; returns the CLI object."""
    argv = list(args[:1])
    if config is not None:
        argv += ["--config", str(config)]
    if tiny:
        argv += ["--config", str(TINY)]
    return build(argv + list(args[1:]))


@contextmanager
def working_in(root: Path, data_dir: Path) -> Iterator[Path]:
    """Run CLI commands with ``root`` as the current folder and ``data_dir`` as ``$FARZI_DATA_DIR``
    (for module-scoped fixtures, which cannot use the function-scoped ``monkeypatch``)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("FARZI_DATA_DIR", str(data_dir))
    patch.setattr("sys.argv", ["farzi"])
    patch.chdir(root)
    try:
        yield root
    finally:
        patch.undo()
