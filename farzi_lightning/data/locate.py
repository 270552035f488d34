"""Finding a data set on disk: a config value, else ``$FARZI_DATA_DIR/<name>``; md5 checks; optional download."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

ENV_VAR = "FARZI_DATA_DIR"
VERIFY_VAR = "FARZI_VERIFY"
"""``FARZI_VERIFY=0`` skips the md5 checks of canonical file names everywhere (a preprocessed or stand-in copy),
as ``verify: false`` does for one data module."""

#: md5 sums of the canonical files (as published with the data sets and checked by common loaders).
KNOWN_MD5 = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
    "u.data": "6e47046882bad158b0efbb84cd5cb987",
}

#: Canonical sources: (url, members of the archive to extract as {member path: file name}).
SOURCES = {
    "ptb": ("https://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
            {f"./simple-examples/data/ptb.{s}.txt": f"ptb.{s}.txt" for s in ("train", "valid", "test")}),
    "ml-100k": ("https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                {f"ml-100k/{f}": f for f in ("u.data", "u.item", "README")}),
}


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path) -> None:
    """Raise if ``path`` is a known file whose md5 differs from the canonical one."""
    want = KNOWN_MD5.get(path.name)
    if want is not None and (got := md5(path)) != want:
        raise ValueError(f"{path}: md5 {got} differs from the canonical {want}; the file is modified or "
                         "truncated (pass verify=False to use it anyway)")


def resolve(name: str, data_dir: str | os.PathLike | None, required: list[str], *, download: bool = True,
            check: bool = True) -> Path:
    """Directory holding ``required`` files for data set ``name``.

    Args:
        name: data set name, the sub-folder of ``$FARZI_DATA_DIR`` (``ptb``, ``ml-100k``).
        data_dir: explicit directory (a config value); wins over the environment variable.
        required: file names that must be present.
        download: fetch from the canonical source when the files are absent (needs a network).
        check: verify md5 sums of known files (``$FARZI_VERIFY=0`` turns this off).
    """
    check = check and os.environ.get(VERIFY_VAR, "1") != "0"
    if data_dir is not None:
        root, origin = Path(data_dir).expanduser(), "data_dir"
    elif os.environ.get(ENV_VAR):
        root, origin = Path(os.environ[ENV_VAR]).expanduser() / name, f"${ENV_VAR}/{name}"
    else:
        root, origin = Path.home() / ".cache" / "farzi" / name, "the default cache (~/.cache/farzi)"
    missing = [f for f in required if not (root / f).is_file()]
    if missing and download and name in SOURCES:
        try:
            _download(name, root)
        except OSError as err:  # no network, refused, or unwritable
            raise FileNotFoundError(
                f"{name}: {', '.join(missing)} not found in {root} (from {origin}) and the download from "
                f"{SOURCES[name][0]} failed ({err}). Put the files there, set data_dir, or set ${ENV_VAR} to a "
                f"folder holding {name}/") from err
        missing = [f for f in required if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{name}: {', '.join(missing)} not found in {root} (from {origin}); set data_dir "
                                f"or ${ENV_VAR} to a folder holding {name}/")
    if check:
        for f in required:
            verify(root / f)
    return root


def _download(name: str, root: Path, timeout: float = 30.0) -> None:
    url, members = SOURCES[name]
    with urllib.request.urlopen(url, timeout=timeout) as response:
        payload = response.read()
    root.mkdir(parents=True, exist_ok=True)
    if url.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            for member, target in members.items():
                with archive.open(member) as src, open(root / (target + ".part"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
    else:
        with tarfile.open(fileobj=io.BytesIO(payload)) as archive:
            for member, target in members.items():
                src = archive.extractfile(member)
                if src is None:
                    raise OSError(f"{url} has no file {member}")
                with open(root / (target + ".part"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
    for target in members.values():  # checked before it takes the real name: a bad download leaves nothing
        part = root / (target + ".part")
        if target in KNOWN_MD5 and md5(part) != KNOWN_MD5[target]:
            part.unlink()
            raise OSError(f"downloaded {target} has the wrong md5")
        part.replace(root / target)
