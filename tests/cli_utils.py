"""Running the ``farzi`` CLI in-process from tests."""

from __future__ import annotations

from pathlib import Path

from farzi_lightning.cli import build

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml"))
TINY = ROOT / "configs" / "overrides" / "tiny.yaml"


def run(*args: str, config: Path | None = None, tiny: bool = True):
    """``farzi <args> --config CONFIG [--config tiny.yaml]``, in-process; returns the CLI object."""
    argv = list(args[:1])
    if config is not None:
        argv += ["--config", str(config)]
    if tiny:
        argv += ["--config", str(TINY)]
    return build(argv + list(args[1:]))
