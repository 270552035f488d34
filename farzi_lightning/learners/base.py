"""What every learner shares: it remembers the arguments it was built with, so it can be rebuilt."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any

from torch import Tensor, nn

from ..contracts import LEARNER, require
from ..parts import RecordsInit
from ..trust import build


class Learner(RecordsInit, nn.Module, metaclass=ABCMeta):
    """Base class of the learners: ``config()`` gives ``{"class_path", "init_args"}`` to rebuild it.

    Trajectory banks store this next to the weights, so a bank says which model its checkpoints belong to.
    A subclass sets ``vocab_size``, ``padding_idx`` and ``max_len`` in ``__init__`` and implements ``forward``
    (``farzi_lightning.contracts``); one that does not fails when it is built, naming what it lacks.
    """

    @abstractmethod
    def forward(self, tokens: Tensor) -> Tensor:
        """Ids ``(B, L)`` or soft tokens ``(B, L, V)`` → next-token logits ``(B, L, V)``."""

    def check_contract(self) -> None:
        require(self, LEARNER, "Learner", type(self).__name__)


def build_learner(config: dict[str, Any], where: str = "learner config", bases: type | tuple[type, ...] | None = None
                  ) -> nn.Module:
    """Instantiate ``{"class_path": "pkg.mod.Class", "init_args": {...}}``: a ``Learner`` (or a subclass of
    ``bases``), resolved through the trust boundary (``farzi_lightning.trust``), so a config read from a file
    (a bank's manifest, a ``summary.pt``) builds nothing else; ``where`` names that file in the refusal."""
    return build(config, Learner if bases is None else bases, where)
