"""Small pieces shared by the datamodules."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

IGNORE_INDEX = -100
"""Target value of positions that carry no label (padding); ``F.cross_entropy``'s default ``ignore_index``."""


def fingerprint(train: Tensor, vocab_size: int) -> str:
    """A short digest of the training data and vocabulary size: a trajectory bank made on other data is refused."""
    return hashlib.sha1(train.contiguous().numpy().tobytes() + str(vocab_size).encode()).hexdigest()[:16]


def left_pad(seq: list[int], length: int, pad: int = 0) -> Tensor:
    """The last ``length`` items of ``seq``, left-padded with ``pad``."""
    seq = seq[-length:]
    out = torch.full((length,), pad, dtype=torch.long)
    if seq:
        out[length - len(seq):] = torch.tensor(seq, dtype=torch.long)
    return out
