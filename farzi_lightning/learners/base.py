"""What every learner shares: it remembers the arguments it was built with, so it can be rebuilt."""

from __future__ import annotations

import functools
import inspect
from abc import ABCMeta, abstractmethod
from typing import Any

from torch import Tensor, nn

from ..contracts import LEARNER, require


class RecordsInit:
    """Mixin: remembers the arguments an instance was built with; ``config()`` gives
    ``{"class_path", "init_args"}`` to rebuild it (``build_learner`` / ``build``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__init__

        @functools.wraps(init)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            outermost = "_init_args" not in self.__dict__  # the outermost __init__ (a subclass's) wins
            if outermost:
                signature = inspect.signature(init)
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                recorded = {}
                for k, v in list(bound.arguments.items())[1:]:
                    kind = signature.parameters[k].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        recorded.update(v)  # **kwargs are arguments like any other
                    elif kind is inspect.Parameter.VAR_POSITIONAL:
                        continue  # object.__init__'s *args: nothing to record
                    else:
                        recorded[k] = v
                object.__setattr__(self, "_init_args", recorded)
                object.__setattr__(self, "_init_class", type(self))
            init(self, *args, **kw)
            if outermost:
                self.check_contract()

        cls.__init__ = recording_init

    def check_contract(self) -> None:
        """Called once the instance is built: raise naming what the class's contract needs and it lacks."""

    def config(self) -> dict[str, Any]:
        cls = self.__dict__["_init_class"]
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}",
                "init_args": {k: _plain(v) for k, v in self.__dict__["_init_args"].items()}}


def _plain(value: Any) -> Any:
    """Arguments that are parts themselves (a start point wrapping another) become their configs."""
    if isinstance(value, RecordsInit):
        return value.config()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


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
    from ..trust import build

    return build(config, Learner if bases is None else bases, where)
