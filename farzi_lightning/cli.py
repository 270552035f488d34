"""The ``farzi`` command: a LightningCLI over any module and datamodule of this package.

    farzi fit --config configs/ml100k_pretrain.yaml
    farzi fit --config configs/ptb_pretrain.yaml --config configs/overrides/tiny.yaml
    farzi test --config configs/ml100k_pretrain.yaml --ckpt_path <checkpoint>

The data's vocabulary size (or item-id count) is linked into the learner, so no YAML repeats it.
"""

from __future__ import annotations

import importlib

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from .distributed import check_precision, check_strategy


class FarziCLI(LightningCLI):
    """LightningCLI with the data → learner links of this package."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.init_args.learner.init_args.vocab_size",
                              apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Refuse a strategy or precision that cannot run a distillation before Lightning builds the trainer
        (Lightning's own checks, e.g. FSDP's need for a GPU, would otherwise answer first and less usefully)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        class_path = str(config.model.get("class_path", "")) if config.get("model") else ""
        module, _, name = class_path.rpartition(".")
        if not module:
            return
        from .module import FarziLightningModule

        if not issubclass(getattr(importlib.import_module(module), name, object), FarziLightningModule):
            return  # pretraining (LearnerModule) may use any strategy Lightning offers
        try:
            check_strategy(config.trainer.strategy)
            check_precision(config.trainer.precision)
        except ValueError as err:
            self.parser.error(str(err))


def build(args: list[str] | None = None, run: bool = True) -> FarziCLI:
    """The CLI, run on ``args`` (None: ``sys.argv``); ``args=`` runs it in-process, e.g. from tests."""
    return FarziCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    save_config_kwargs={"overwrite": True}, args=args, run=run,
                    parser_kwargs={"default_env": False})


def main() -> None:
    """Entry point of the ``farzi`` console script."""
    build()


if __name__ == "__main__":
    main()
