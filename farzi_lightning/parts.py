"""Parts that remember how they were built: ``RecordsInit`` gives every learner, summary, inner optimiser, start
point and harness a ``config()`` (``{"class_path", "init_args"}``) that rebuilds it. Imports nothing of this
package, so every module can use it."""

from __future__ import annotations

import functools
import inspect
from typing import Any


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
