"""Writing files so that nothing is ever half-written: every file the package writes goes through here."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import torch


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder and rename it: readers never see half a file. The file
    gets the permissions a plain ``open(path, "w")`` would (``0666`` less the umask), not ``mkstemp``'s 0600:
    summaries, banks and manifests are meant to be shared."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_save(obj, path: Path) -> None:
    """``torch.save(obj, path)`` through ``atomic_write``: checkpoints, bank steps and summaries alike."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(Path(path), lambda f: f.write(buffer.getvalue()))
