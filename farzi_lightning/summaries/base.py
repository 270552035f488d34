"""``Summary``: an ``nn.Module`` whose parameters *are* the distilled data: n sequences of L soft tokens."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..contracts import SUMMARY, require
from ..parts import RecordsInit

Init = Literal["random", "head", "teacher", "noise", "real"]
Inputs = Literal["tied", "fixed"]
"""What a learnable summary's learner reads: ``tied``, the summary's own distributions (through the ``Feed``:
soft, hard or straight-through; one distribution per position is both input and target), or ``fixed``, the
initial rows' real tokens, held apart in the ``input_tokens`` buffer, so that the parameters are the targets
only (label learning; the teacher-labelled start keeps the teacher's own distributions)."""
"""Where a learnable summary starts: a same-size baseline by name (``random`` rows, ``head`` rows,
``teacher``-labelled rows; ``real`` is an alias of ``random``) or ``noise`` (random logits)."""


class Summary(RecordsInit, nn.Module, metaclass=ABCMeta):
    """Base class. ``forward(indices) -> (B, L, V)`` probabilities; ``decode() -> (n, L)`` token ids.

    Args:
        vocab_size: number of tokens V (given by the learner / data, not by configs).
        num_sequences: n, the number of synthetic sequences.
        seq_len: L, tokens per sequence (the learner reads the first L-1 and predicts the last L-1).
        padding_idx: a token the summary never produces (SASRec's item 0); None: none.
    """

    distribution_tensors: dict[str, str] = {}
    """State entries of shape ``(n, L, V)`` and what they hold (``logits`` or ``probs``): what compact storage
    (``summary.pt`` with ``top_k``) keeps the top entries of per position."""

    def __init__(self, vocab_size: int, num_sequences: int, seq_len: int, padding_idx: int | None = None) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("num_sequences", num_sequences), ("seq_len", seq_len)):
            if value < (2 if name == "seq_len" else 1):
                raise ValueError(f"{name} must be >= {2 if name == 'seq_len' else 1}, got {value}")
        self.vocab_size, self.num_sequences, self.seq_len = vocab_size, num_sequences, seq_len
        self.padding_idx = padding_idx

    @property
    def size_tokens(self) -> int:
        """n · L synthetic tokens: the summary's size in the units of the data."""
        return self.num_sequences * self.seq_len

    @abstractmethod
    def logits(self, indices: Tensor | None = None) -> Tensor:
        """Unnormalised scores ``(B, L, V)`` of the sequences at ``indices`` (None: all)."""

    def check_contract(self) -> None:
        require(self, SUMMARY, "Summary", type(self).__name__)

    def forward(self, indices: Tensor | None = None) -> Tensor:
        logits = self.logits(indices)
        if self.padding_idx is not None:
            logits = logits.index_fill(-1, torch.tensor([self.padding_idx], device=logits.device), float("-inf"))
        return torch.softmax(logits, dim=-1)  # (B, L, V)

    def input_ids(self, indices: Tensor | None = None) -> Tensor | None:
        """``(B, L)`` input tokens held apart from the distributions (None: the inputs are the distributions)."""
        tokens = getattr(self, "input_tokens", None)
        if tokens is None:
            return None
        return tokens if indices is None else tokens[indices]

    #: Parameters whose first dimension is the sequence (``forward(indices)`` reads just those rows of them):
    #: the inner loss lets reverse-mode optimisers differentiate only the rows a step reads (``bilevel.inner_loss``).
    row_parameters: tuple[str, ...] = ()

    def row_parameter_positions(self) -> tuple[int, ...]:
        """Positions in ``parameters()`` of the ``row_parameters``."""
        return tuple(i for i, (name, _) in enumerate(self.named_parameters()) if name in self.row_parameters)

    def functional(self, tensors: tuple[Tensor, ...], indices: Tensor | None = None) -> Tensor:
        """``forward`` evaluated with ``tensors`` in place of ``parameters()`` (what the inner loss differentiates);
        with ``indices=None`` and the ``row_parameters`` in ``tensors`` already cut to some rows, the
        distributions of just those rows."""
        names = [n for n, _ in self.named_parameters()]
        return functional_call(self, dict(zip(names, tensors)), (indices,))

    def weights(self, tensors: tuple[Tensor, ...] | None = None, indices: Tensor | None = None) -> Tensor | None:
        """``(B,)`` weights of the rows at ``indices`` in the inner loss (and downstream training), from
        ``tensors`` in place of ``parameters()`` when given (cut to rows already, like ``functional``); None: every
        row weighs 1 (a summary without ``row_weights``)."""
        names = [n for n, _ in self.named_parameters()]
        if "log_weight" not in names:
            return None
        log_weight = self.log_weight if tensors is None else tensors[names.index("log_weight")]
        return (log_weight if indices is None else log_weight[indices]).exp()

    @torch.no_grad()
    def decode(self, method: Literal["argmax", "sample"] = "argmax", generator: torch.Generator | None = None
               ) -> Tensor:
        """Hard token ids ``(n, L)``: the most likely token per position, or one sampled from it; a summary whose
        inputs are held apart decodes to those inputs."""
        ids = self.input_ids()
        if ids is not None:
            return ids.clone()
        probs = self.forward()
        if method == "argmax":
            return probs.argmax(-1)
        return torch.multinomial(probs.reshape(-1, self.vocab_size), 1, generator=generator).view(probs.shape[:2])

    def initialize(self, real: Tensor, generator: torch.Generator | None = None,
                   teacher: nn.Module | None = None) -> None:
        """Fill the summary from ``real`` ``(N, ≥L)`` ids (``LearnableSummary``: from a same-size baseline or noise;
        the baselines: their own rows)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to start from real rows (subclass "
                                  "farzi_lightning.summaries.LearnableSummary, or override initialize)")

    def device_of(self) -> torch.device:
        return next(iter(self.parameters()), torch.empty(0)).device

    def pick(self, real: Tensor, n: int, seq_len: int, generator: torch.Generator | None) -> Tensor:
        """``n`` real sequences cut to their last ``seq_len`` tokens, drawn without replacement (with, when
        fewer than ``n`` exist). Rows free of padding are preferred; when there are too few, the least padded
        are taken and their padding is replaced by tokens drawn from the data's own frequencies, so a summary
        never starts from padding (which it cannot produce)."""
        if real.dim() != 2 or real.shape[1] < seq_len:
            raise ValueError(f"real sequences must be (N, >= {seq_len}) ids, got shape {tuple(real.shape)}")
        real = real[:, -seq_len:]
        if self.padding_idx is None:
            return real[_draw(len(real), n, generator)]
        pad = real == self.padding_idx
        full = real[~pad.any(dim=1)]
        if len(full) >= n:
            return full[_draw(len(full), n, generator)]
        order = torch.argsort(pad.sum(1), stable=True)  # least padded first
        rows = real[order[: max(n, len(full))]]
        rows = rows[_draw(len(rows), n, generator)].clone()
        tokens = real[~pad]
        if len(tokens) == 0:
            raise ValueError("the real sequences hold nothing but padding")
        holes = rows == self.padding_idx
        rows[holes] = tokens[torch.randint(len(tokens), (int(holes.sum()),), generator=generator)]
        return rows


def _draw(available: int, n: int, generator: torch.Generator | None) -> Tensor:
    """``n`` row indices: without replacement when there are enough, else with."""
    if available >= n:
        return torch.randperm(available, generator=generator)[:n]
    return torch.randint(available, (n,), generator=generator)
