"""How a summary feeds a learner: what the learner reads (inputs) and what it is trained to predict (targets).

A summary is one distribution per position, ``p`` of shape ``(B, L, V)``. The learner reads positions
``0..L-2`` and predicts positions ``1..L-1``:

- ``soft``: inputs are the distributions themselves (``p @ E``: mixtures of embeddings);
- ``hard``: inputs are the most likely tokens (one-hot, no gradient through them), targets stay soft;
- ``straight_through``: hard inputs in the forward pass, the soft distribution's gradient in the backward pass.

Learners are evaluated on real (one-hot) histories; ``hard`` and ``straight_through`` train them on the same
kind of input. The same ``Feed`` is used in the inner loop, in downstream training and in ``summary.pt``.

A summary may also hold its inputs apart from its targets (``Summary.input_ids``: real tokens, e.g. a
teacher-labelled sample whose targets are the teacher's own distributions): the feed is then given those ids
and the learner reads them one-hot, whatever the input mode; the distributions serve as targets only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

InputMode = Literal["soft", "hard", "straight_through"]


class Feed:
    """Turns summary distributions ``(B, L, V)`` into ``(inputs (B, L-1, V), targets (B, L-1, V))``.

    Args:
        input_mode: ``soft``, ``hard`` or ``straight_through`` (see the module docstring).
        input_temperature: inputs read ``softmax(log p / τ_in)`` (soft mode; hard inputs are the argmax).
        target_temperature: targets are ``softmax(log p / τ_out)``; < 1 sharpens, > 1 smooths.
    """

    def __init__(self, input_mode: InputMode = "soft", input_temperature: float = 1.0,
                 target_temperature: float = 1.0) -> None:
        if input_mode not in ("soft", "hard", "straight_through"):
            raise ValueError(f"input_mode must be soft, hard or straight_through, got {input_mode!r}")
        for name, value in (("input_temperature", input_temperature), ("target_temperature", target_temperature)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.input_mode = input_mode
        self.input_temperature, self.target_temperature = float(input_temperature), float(target_temperature)

    def config(self) -> dict:
        return {"input_mode": self.input_mode, "input_temperature": self.input_temperature,
                "target_temperature": self.target_temperature}

    def __repr__(self) -> str:
        return f"Feed({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"

    @staticmethod
    def _temper(probs: Tensor, temperature: float) -> Tensor:
        if temperature == 1.0:
            return probs
        return torch.softmax(torch.log(probs.clamp_min(1e-30)) / temperature, dim=-1)

    def __call__(self, probs: Tensor, ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``probs`` ``(B, L, V)``; ``ids`` ``(B, L)`` input tokens held apart (None: inputs come from ``probs``)."""
        source, targets = probs[:, :-1], self._temper(probs[:, 1:], self.target_temperature)
        if ids is not None:
            return F.one_hot(ids[:, :-1], probs.shape[-1]).to(probs.dtype), targets
        if self.input_mode == "soft":
            return self._temper(source, self.input_temperature), targets
        hard = F.one_hot(source.argmax(-1), probs.shape[-1]).to(probs.dtype)  # (B, L-1, V)
        if self.input_mode == "hard":
            return hard, targets
        return hard + source - source.detach(), targets  # straight-through: forward hard, backward soft
