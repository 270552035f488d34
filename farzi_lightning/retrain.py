"""Retraining a summary file as it says: ``summary.pt`` carries its downstream recipe (optimiser and its
hyper-parameters, steps, batch size, validation cadence, patience, seeds), its feed and its learner's config,
so fresh learners can be trained on it and scored from the file alone (``benchmarks/check_summary.py``)."""

from __future__ import annotations

from typing import Any, Literal

from .downstream import Downstream
from .inner import InnerOptimizer, ReverseAdam
from .learners import build_learner
from .scores import Score
from .summaries import Summary


class RecipeHarness(Downstream):
    """The downstream harness that trains as ``recipe`` says — a ``summary.pt``'s ``recipe``, as
    ``Downstream.recipe`` wrote it — every field kept, not re-derived from an inner optimiser.

    Args:
        recipe: the file's recipe. One without ``patience`` predates early stopping: it trains to the cap.
        seeds: downstream seeds 0..seeds-1 (None: the recipe's).
        kwargs: other ``Downstream`` arguments (``candidates``, ``val_batches``, ...).
    """

    def __init__(self, recipe: dict[str, Any], seeds: int | None = None, **kwargs: Any) -> None:
        self.fixed = {**recipe, "patience": recipe.get("patience"), "seeds": seeds or recipe["seeds"]}
        super().__init__(lr=recipe["lr"], steps=recipe["steps"], batch_size=recipe["batch_size"],
                         eval_every=recipe["eval_every"], seeds=self.fixed["seeds"],
                         patience=self.fixed["patience"], **kwargs)

    def recipe(self, inner: InnerOptimizer, inner_batch_size: int) -> dict[str, Any]:
        return dict(self.fixed)


def evaluate_summary(summary: Summary, data: Any, split: Literal["valid", "test"] = "test", *,
                     seeds: int | None = None, val_batches: int | None = None, progress=None,
                     inner: InnerOptimizer | None = None) -> dict[tuple[str, str], Score]:
    """Fresh learners of a summary's own architecture trained on it alone, as the recipe inside it says, and
    scored on ``split``. ``seeds``: more downstream seeds than the recipe's (the first ones are the recipe's own).
    ``inner`` is needed only where the recipe trains with an inner optimiser's own update (``forwardoptimizer``)."""
    recipe = summary.recipe
    if inner is None:
        if recipe["optimizer"] not in ("adam", "adamw", "sgd"):
            raise ValueError(f"this summary's recipe trains with {recipe['optimizer']!r}, an inner optimiser's "
                             "own update: pass that inner optimiser")
        inner = ReverseAdam(lr=recipe["lr"], steps=1)
    harness = RecipeHarness(recipe, seeds=seeds, val_batches=val_batches, candidates=["summary"])
    return harness.evaluate(summary=summary, feed=summary.feed, learner=build_learner(summary.learner_config),
                            inner=inner, inner_batch_size=recipe["batch_size"], data=data, split=split,
                            progress=progress)
