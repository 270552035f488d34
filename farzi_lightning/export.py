"""Writing a summary for people and other trainers: ``summary.pt`` and ``summary.txt`` next to the checkpoints,
and ``load_summary`` to rebuild the ``Summary`` from the file alone.

Compact storage (``top_k``): a summary holding one distribution over V tokens per position (``TokenSummary``'s
logits, a teacher-labelled sample's targets) is stored as the k most likely tokens of each position and their
probabilities (float16), renormalised; ids are stored in the narrowest integer type that holds V. With ``rank``,
as rank-r factors and a per-token bias fitted to the distributions in KL (``_lowrank``), O(nLr + rV). A
``LatentSummary`` is stored as its factors ``Z`` and ``M``, already O(nLd + dV). Either way ``load_summary``
rebuilds the same ``Summary`` class, whose distributions are then the stored (compact) ones, so a
"1% summary" is also small on disk (``export_summary`` reports its bytes beside the training file's).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from .files import atomic_save, atomic_write
from .learners import build_learner
from .summaries import Feed, Summary


def export_dir(trainer: Trainer) -> Path:
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir)


def decode_rows(data: Any, ids: torch.Tensor) -> list[str]:
    """One line per sequence of ``ids`` ``(n, L)`` in the data's own names (``decode``: words, item titles), else
    the ids (``farzi predict``, ``SummaryMonitor``)."""
    if hasattr(data, "decode"):
        return [data.decode(row) for row in ids]
    return [" ".join(str(int(i)) for i in row) for row in ids]


def _ids(t: Tensor, vocab_size: int) -> Tensor:
    """Token ids in the narrowest integer type that holds ``vocab_size`` (restored to int64 on load)."""
    return t.to(torch.int16 if vocab_size <= 2**15 else torch.int32)


def summary_payload(summary: Summary, vocabulary: list[str], feed: Feed | None = None,
                    learner: nn.Module | None = None, recipe: dict[str, Any] | None = None,
                    top_k: int | None = None, rank: int | None = None, bits: int = 16) -> dict[str, Any]:
    """What ``summary.pt`` holds (plain types and tensors: loads with ``weights_only=True``):

    ``tokens`` (n, L) argmax ids; ``state_dict``; ``vocabulary`` (a list; in the compact forms its
    newline-joined UTF-8 text, zlib-compressed, as a uint8 tensor: ``vocabulary_of``); ``class`` (import path);
    ``init_args`` (the summary's constructor arguments); ``feed`` (input mode and temperatures); ``learner``
    (the learner config it was distilled for); ``recipe`` (downstream optimiser, lr, steps, batch size); with
    ``top_k``, ``topk``: ``{name: {"kind", "shape", "indices" (n, L, k), "probs" (n, L, k) float16}}`` in place of
    the summary's ``(n, L, V)`` state entries; with ``rank``, ``lowrank``: ``{name: {"kind", "shape", "left" (n, L, r),
    "right" (r, V), "bias" (V,)}}`` float16, the rank-r fit closest in KL (``_lowrank``); with ``bits=8`` the
    factors int8 beside ``"left_scale"`` (n, L, 1) and ``"right_scale"`` (1, V) float16.
    """
    config = summary.config()
    init_args = dict(config["init_args"], padding_idx=summary.padding_idx)
    state = {k: v.detach().cpu() for k, v in summary.state_dict().items()}
    payload: dict[str, Any] = {"tokens": summary.decode().cpu()}
    if top_k is not None and rank is not None:
        raise ValueError("choose top_k or rank, not both")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    if rank is not None:
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be an integer >= 1 or None, got {rank!r}")
        payload["lowrank"] = {name: _lowrank(summary, kind, rank, tuple(state.pop(name).shape), bits=bits)
                              for name, kind in summary.distribution_tensors.items()}
        _narrow(state, payload, summary.vocab_size)
    if top_k is not None:
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
        compact = {}
        for name, kind in summary.distribution_tensors.items():
            with torch.no_grad():
                probs = summary().detach().float().cpu()  # (n, L, V): the distributions the learner trains on
            k = min(top_k, summary.vocab_size)
            values, indices = probs.topk(k, dim=-1)
            values = values / values.sum(-1, keepdim=True)
            compact[name] = {"kind": kind, "shape": list(state[name].shape),
                             "indices": _ids(indices, summary.vocab_size), "probs": values.half()}
            del state[name]
        payload["topk"] = compact
        _narrow(state, payload, summary.vocab_size)
    words = list(vocabulary)
    compact = top_k is not None or rank is not None
    payload.update({"state_dict": state, "vocabulary": _pack_words(words) if compact else words,
                    "class": config["class_path"],
                    "init_args": init_args, "feed": (feed or Feed()).config(),
                    "learner": learner.config() if learner is not None else None,
                    "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in (recipe or {}).items()}})
    return payload


def _pack_words(words: list[str]) -> Tensor | list[str]:
    """A vocabulary as one uint8 tensor: its newline-joined UTF-8 text, zlib-compressed (PTB's 10,000 words: 38 KB
    against a pickled list's 172 KB)."""
    if any("\n" in w for w in words):
        return words
    return torch.frombuffer(bytearray(zlib.compress("\n".join(words).encode(), 9)), dtype=torch.uint8).clone()


def vocabulary_of(payload: dict[str, Any]) -> list[str]:
    """The vocabulary of a ``summary.pt`` payload, stored as a list or packed (``_pack_words``)."""
    words = payload["vocabulary"]
    if isinstance(words, Tensor):
        return zlib.decompress(words.numpy().tobytes()).decode().split("\n")
    return list(words)


def _narrow(state: dict[str, Tensor], payload: dict[str, Any], vocab_size: int) -> None:
    """Token buffers and ids in the narrowest integer type (compact forms)."""
    for name, value in state.items():
        if value.dtype == torch.int64:
            state[name] = _ids(value, vocab_size)
    payload["tokens"] = _ids(payload["tokens"], vocab_size)


#: Adam steps of the KL fit of a low-rank summary file (``_lowrank``): PTB's 7,200 x 10,000 targets take ~4 min
#: on 2 CPU cores.
LOWRANK_FIT_STEPS = 100


def _lowrank(summary: Summary, kind: str, rank: int, shape: tuple[int, ...],
             steps: int = LOWRANK_FIT_STEPS, bits: int = 16) -> dict[str, Any]:
    """Rank-``rank`` factors and a per-token bias whose softmax is closest to the summary's distributions p in KL:
    ``min mean_i KL(p_i || softmax(left_i @ right + bias))``.

    Starts from the truncated SVD of the centred log-probabilities (the least-squares fit in log space, which
    weighs every token alike: on PTB's 10,000 words it leaves KL 0.27 nats at rank 12) and refines by Adam on the
    KL, whose gradient in the logits is ``q - p`` (0.01 nats after 100 steps); the best iterate is kept, so a
    distribution of rank ≤ ``rank`` stays exact. A learner's logits are ``h @ E^T + b``: a teacher of width d
    labels with rank ≤ d, exactly. Stored as float16, the factors of balanced scale; with ``bits=8`` as int8 with a
    float16 scale per position (left) and per token (right), half the bytes of a rank, so twice the rank fits."""
    with torch.no_grad():
        probs = summary().detach().float().cpu()  # (n, L, V)
    probs = (probs / probs.sum(-1, keepdim=True)).reshape(-1, probs.shape[-1])  # (N, V)
    logp = probs.clamp_min(1e-12).log()
    centred = logp - logp.mean(-1, keepdim=True)  # softmax ignores a constant per row
    bias = centred.mean(0)  # (V,)
    r = min(rank, *centred.shape)
    with torch.random.fork_rng(devices=[]):  # the randomised SVD draws: same file every time, global RNG untouched
        torch.manual_seed(0)
        u, s, v = torch.svd_lowrank(centred - bias, q=min(r + 8, *centred.shape), niter=2)
    root = s[:r].sqrt()
    left, right = u[:, :r] * root, root[:, None] * v[:, :r].T  # (N, r), (r, V)
    entropy = (probs * logp).sum(-1).mean()  # -H(p): KL = -H(p) - E_p log q
    masked = None if summary.padding_idx is None else torch.zeros(probs.shape[-1], dtype=torch.bool)
    if masked is not None:
        masked[summary.padding_idx] = True
    params = [t.clone().requires_grad_() for t in (left, right, bias)]
    best, best_kl = [t.detach().clone() for t in params], float("inf")
    optimizer = torch.optim.Adam(params, lr=0.03)
    for step in range(steps + 1):
        logits = params[0] @ params[1] + params[2]  # (N, V)
        if masked is not None:
            logits = logits.masked_fill(masked, float("-inf"))
        with torch.no_grad():
            logq = torch.log_softmax(logits, -1)
            kl = float(entropy - (probs * logq.masked_fill(masked, 0.0) if masked is not None
                                  else probs * logq).sum(-1).mean())
            if kl < best_kl:
                best, best_kl = [t.detach().clone() for t in params], kl
            grad = (logq.exp() - probs) / len(probs)
        if step == steps:
            break
        optimizer.zero_grad()
        logits.backward(grad)
        optimizer.step()
    left, right, bias = best
    scale = (right.norm(dim=1) / left.norm(dim=0).clamp_min(1e-12)).sqrt().clamp_min(1e-12)  # balance per component
    left, right = left * scale, right / scale[:, None]
    entry = {"kind": kind, "shape": list(shape), "bias": bias.half()}
    if bits == 8:
        (left, left_scale), (right, right_scale) = _int8(left, 1), _int8(right, 0)
        entry.update(left_scale=left_scale.reshape(*shape[:-1], 1), right_scale=right_scale)
    entry.update(left=left.reshape(*shape[:-1], r) if bits == 8 else left.reshape(*shape[:-1], r).half(),
                 right=right if bits == 8 else right.half())
    return entry


def _int8(t: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``t`` as int8 and a float16 scale per slice along ``dim`` (the max magnitude maps to 127; round to nearest)."""
    scale = (t.abs().amax(dim, keepdim=True) / 127).half().float().clamp_min(1e-8)
    return (t / scale).round().clamp(-127, 127).to(torch.int8), scale.half()


def _from_lowrank(entry: dict[str, Any], temperature: float, padding_idx: int | None) -> Tensor:
    left, right = entry["left"].float(), entry["right"].float()
    if "left_scale" in entry:  # 8-bit factors (``_int8``)
        left, right = left * entry["left_scale"].float(), right * entry["right_scale"].float()
    logits = left @ right  # (n, L, r) @ (r, V) -> (n, L, V)
    if "bias" in entry:  # files written before the KL fit have none
        logits = logits + entry["bias"].float()
    if padding_idx is not None:
        logits[..., padding_idx] = float("-inf")
    if entry["kind"] == "probs":
        return torch.softmax(logits, -1)
    return logits.clamp_min(-1.0e4) * temperature


def _expand(entry: dict[str, Any], temperature: float) -> Tensor:
    """A stored top-k distribution back to its dense ``(n, L, V)`` state entry."""
    indices, probs = entry["indices"].long(), entry["probs"].float()
    probs = probs / probs.sum(-1, keepdim=True)
    if entry["kind"] == "probs":
        return torch.zeros(entry["shape"]).scatter_(-1, indices, probs)
    # logits: softmax(z / τ) must give the renormalised top k exactly; every other token gets exp(-1e4) = 0
    logits = torch.full(entry["shape"], -1.0e4).scatter_(-1, indices, torch.log(probs.clamp_min(1e-30)))
    return logits * temperature


def save_summary(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (a crash leaves the old file or none, never half of one)."""
    atomic_save(payload, Path(path))
    return Path(path)


def export_summary(summary: Summary, trainer: Trainer, feed: Feed | None = None, learner: nn.Module | None = None,
                   recipe: dict[str, Any] | None = None, top_k: int | None = None, rank: int | None = None,
                   bits: int = 16) -> Path:
    """Save ``summary.pt`` (see ``summary_payload``) and ``summary.txt`` (one decoded row a line); report the
    file's bytes beside the training file's; returns the ``summary.pt`` path."""
    data = trainer.datamodule
    vocabulary = data.vocabulary() if hasattr(data, "vocabulary") else [str(i) for i in range(summary.vocab_size)]
    payload = summary_payload(summary, vocabulary, feed, learner, recipe, top_k, rank, bits)
    root = export_dir(trainer)
    save_summary(root / "summary.pt", payload)
    lines = [" ".join(vocabulary[int(i)] for i in row) for row in payload["tokens"]]
    atomic_write(root / "summary.txt", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    rank_zero_info(size_report(root / "summary.pt", getattr(data, "train_file", None)))
    return root / "summary.pt"


def size_report(path: Path, train_file: Path | None) -> str:
    """``summary.pt: N bytes (x% of the training file's M bytes)``."""
    size = Path(path).stat().st_size
    line = f"{path}: {size:,} bytes"
    if train_file is not None and Path(train_file).is_file():
        data = Path(train_file).stat().st_size
        line += f", {100 * size / data:.1f}% of the training file {Path(train_file).name} ({data:,} bytes)"
    return line


#: What every ``summary.pt`` holds (``summary_payload``).
SUMMARY_KEYS = ("tokens", "state_dict", "vocabulary", "class", "init_args", "feed", "learner", "recipe")


def read_summary_file(path: str | Path) -> dict[str, Any]:
    """The payload of a ``summary.pt``, loaded with ``weights_only=True``; a missing, damaged, foreign or older
    file raises one ``ValueError`` naming it and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found" + (" (a directory; name its summary.pt)" if path.is_dir() else ""))
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a complete summary.pt (truncated, or not written by torch.save)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- damaged archive or an object the weights-only unpickler refuses
        raise ValueError(f"{path}: not a readable summary.pt ({type(err).__name__}: "
                         f"{str(err).strip().splitlines()[0][:120]}); nothing in it was run") from None
    if not isinstance(payload, dict) or "tokens" not in payload or "state_dict" not in payload:
        found = sorted(payload)[:6] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a summary.pt (found {found}; a checkpoint is read with --ckpt_path, a "
                         "summary with farzi_lightning.load_summary)")
    missing = [k for k in SUMMARY_KEYS if k not in payload]
    if missing:
        raise ValueError(f"{path}: a summary.pt without {', '.join(missing)} (written by an older version); "
                         "re-export it with `farzi fit`")
    return payload


def load_summary(path: str | Path, map_location: str | torch.device = "cpu") -> Summary:
    """Rebuild the ``Summary`` module of a ``summary.pt`` from the file alone.

    The returned module also carries ``feed`` (a ``Feed``), ``learner_config`` and ``recipe`` from the file,
    so ``farzi_lightning.bilevel.train_steps`` can train any learner on it as ``farzi test`` did.
    """
    payload = read_summary_file(path)
    summary = build_learner({"class_path": payload["class"], "init_args": payload["init_args"]}, f"{path}: class",
                            Summary)
    state = dict(payload["state_dict"])
    temperature = float(getattr(summary, "temperature", 1.0))
    for name, entry in payload.get("topk", {}).items():
        state[name] = _expand(entry, temperature)
    for name, entry in payload.get("lowrank", {}).items():
        state[name] = _from_lowrank(entry, temperature, summary.padding_idx)
    summary.load_state_dict(state)
    summary.feed = Feed(**payload["feed"])
    summary.learner_config, summary.recipe = payload["learner"], payload["recipe"]
    return summary.to(map_location)
