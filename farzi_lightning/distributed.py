"""Which Lightning strategies and precisions a distillation can run under, checked before any training.

Farzi differentiates through the learner's training (a double backward through ``torch.func.functional_call``
on parameters held by the inner optimiser). Data parallelism keeps every parameter whole on every process, so
any DDP flavour works: each process draws its own start points, and the meta-gradients are averaged through the
strategy. Sharding strategies (FSDP, DeepSpeed) split or wrap the very parameters the inner loop
differentiates, and half precision breaks the exact reversal of the inner trajectory, so both are refused.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_warn

SUPPORTED_STRATEGIES = ("auto", "single_device", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook",
                        "and their _find_unused_parameters_{true,false} variants")
SUPPORTED_PRECISIONS = ("32-true", "64-true", "bf16-mixed")

_REFUSED_PRECISIONS = {
    "16-mixed": "its gradient scaler would unscale meta-gradients that were never scaled",
    "16": "its gradient scaler would unscale meta-gradients that were never scaled",
    "16-true": "half-precision parameters break the exact reversal of the inner trajectory",
    "bf16-true": "half-precision parameters break the exact reversal of the inner trajectory",
    "transformer-engine": "its FP8 layers break the exact reversal of the inner trajectory",
    "transformer-engine-float16": "its FP8 layers break the exact reversal of the inner trajectory",
}


def _refusal(name: str) -> ValueError:
    return ValueError(f"trainer.strategy: {name} cannot run a distillation: it shards or wraps the learner "
                      "parameters that the inner loop differentiates twice. Supported: "
                      + ", ".join(SUPPORTED_STRATEGIES))


def check_strategy(strategy: Any) -> None:
    """Refuse a strategy (a ``Strategy``, its class, a registry name or a ``{"class_path": ...}`` config) that
    cannot take the double backward; accept everything data-parallel."""
    if isinstance(strategy, dict):
        strategy = strategy.get("class_path", "")
    elif hasattr(strategy, "class_path") and not isinstance(strategy, Strategy):  # a parsed config
        strategy = strategy.class_path
    if isinstance(strategy, str):
        name = strategy.lower()
        if name == "auto" or name == "single_device" or name.startswith("ddp"):
            return
        if "." in strategy:  # a class path
            module, _, attr = strategy.rpartition(".")
            strategy = getattr(__import__(module, fromlist=[attr]), attr)
        else:
            raise _refusal(repr(strategy))
    cls = strategy if isinstance(strategy, type) else type(strategy)
    if not issubclass(cls, Strategy):
        return  # not a strategy at all: Lightning says so itself
    if "DeepSpeed" in cls.__name__ or not issubclass(cls, (DDPStrategy, SingleDeviceStrategy)):
        raise _refusal(cls.__name__)


def check_precision(precision: Any, device: torch.device | None = None) -> None:
    """Refuse precision settings that break the meta-gradient (see ``_REFUSED_PRECISIONS``); warn of bf16-mixed on
    a CPU ``device``."""
    name = str(precision)
    if name in _REFUSED_PRECISIONS:
        raise ValueError(f"trainer.precision: {name!r} cannot run a distillation: {_REFUSED_PRECISIONS[name]}. "
                         f"Supported: {', '.join(SUPPORTED_PRECISIONS)}")
    if name == "bf16-mixed" and device is not None and device.type == "cpu":
        rank_zero_warn("trainer.precision: bf16-mixed on CPU slows a distillation down and rounds the inner "
                       "forward passes without saving memory that matters; 32-true is the default")
