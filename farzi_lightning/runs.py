"""Runs own their folders: a run folder (``<root>/lightning_logs/version_N``) and a bank's run are claimed by one
process at a time.

- ``claim_version(logger)``: an automatic version is taken with ``mkdir`` (atomic: two runs started at once
  get two versions, never one shared ``version_0``); an explicit one (a resume) is taken as it is;
- ``hold(path, what)``: an exclusive lock (``filelock``: released by the kernel when the process ends, even on
  ``kill -9``); a second holder fails at once with one line naming the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout

#: Locks this process holds, by path (kept for the life of the process or until ``release``).
_HELD: dict[str, FileLock] = {}


def hold(path: Path, what: str) -> FileLock:
    """Take the lock file ``path`` without waiting; ``ValueError`` naming ``what`` if another process holds it."""
    path = Path(path)
    key = str(path.resolve())
    if key in _HELD:
        return _HELD[key]
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ValueError(f"{path.parent}: {what} is in use by another running process (it holds {path.name}); "
                         "wait for it to finish, or write this run elsewhere") from None
    _HELD[key] = lock
    return lock


def release(path: Path) -> None:
    lock = _HELD.pop(str(Path(path).resolve()), None)
    if lock is not None:
        lock.release()


def rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def claim_version(logger) -> Path | None:
    """Claim ``logger``'s run folder for this process (see the module docstring); returns it (None: a logger
    without versioned folders, or not rank zero)."""
    if not rank_zero() or not hasattr(logger, "root_dir") or not hasattr(logger, "_version"):
        return None
    explicit = logger._version is not None
    while True:
        folder = Path(logger.log_dir)
        try:
            folder.mkdir(parents=True, exist_ok=explicit)
            break
        except FileExistsError:  # another run took this version between listing and mkdir
            logger._version = _number(logger.version) + 1
    hold(folder / "run.lock", "this run folder")
    return folder


def _number(version) -> int:
    return int(str(version).removeprefix("version_")) if str(version).removeprefix("version_").isdigit() else 0
