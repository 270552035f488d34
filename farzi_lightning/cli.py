"""The ``farzi`` command: a LightningCLI over any module and datamodule of this package.

    farzi fit --config configs/ml100k_pretrain.yaml
    farzi fit --config configs/ptb_pretrain.yaml --config configs/overrides/tiny.yaml
    farzi test --config configs/ml100k_pretrain.yaml --ckpt_path <checkpoint>

The data's vocabulary size (or item-id count) is linked into the learner, so no YAML repeats it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from .checkpoints import AtomicCheckpointIO, checkpoint_class, find_last, read_checkpoint
from .distributed import check_precision, check_strategy
from .messages import DISK_ERRORS, PARSED, USER_ERRORS, check_yaml_files, condense, one_line
from .runs import claim_version, release


class FarziParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors end with one line naming the key (no 50-line usage)."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or os.environ.get("FARZI_TRACEBACK"):
            return super().error(message, ex)
        sys.stderr.write(f"tip: `{self.prog.replace(' [options]', '')} --help` lists every option\n"
                         f"error: {condense(message)}\n")
        sys.exit(2)


class FarziCLI(LightningCLI):
    """LightningCLI for this package: the data's vocabulary linked into the learner, ``--tiny``, a verified
    ``--ckpt_path`` (with ``last``) that never overrides the config, and the checks a distillation needs before
    Lightning builds the trainer."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.init_args.learner.init_args.vocab_size",
                              apply_on="instantiate")
        parser.add_argument("--other_data", type=bool, default=False,
                            help="Allow --ckpt_path to restore a checkpoint trained on other data (another data set "
                                 "or preprocessing; refused by default)")
        parser.add_argument("--tiny", type=bool, default=False,
                            help="Shrink a distillation to a run of seconds (configs/overrides/tiny.yaml sets it): "
                                 + ", ".join(f"{k.rpartition('init_args.')[2]} <= {v}" for k, v in TINY.items()))

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        config = self.config[self.config.subcommand] if self.config.get("subcommand") else self.config
        if config.get("tiny"):
            _under_tiny(config)  # before --ckpt_path last is looked for: tiny runs keep their own folders

    def _shrink(self, config) -> None:
        """``--tiny``: cap the sizes that make a distillation slow (``TINY``), wherever the config has them."""
        for key, cap in TINY.items():
            value = config.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                config[key] = cap

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path``: ``last`` is the newest ``last.ckpt`` under the run's root (its run folder is reused,
        so a resumed fit logs where it left off), and the file is verified. Unlike LightningCLI's default, the
        checkpoint's stored hyper-parameters never replace the config: what the YAML and the command line say
        is what runs (evaluation-time settings included), a checkpoint of another module class is refused, and
        nothing named in a checkpoint is imported."""
        subcommand = self.config.get("subcommand")
        if not subcommand or not self.config[subcommand].get("ckpt_path"):
            return
        config = self.config[subcommand]
        path = config.ckpt_path
        if path == "init":  # score the model as built: said, not assumed
            config.ckpt_path, self._as_built = None, True
            return
        if path == "last":
            root = Path(config.trainer.get("default_root_dir") or os.getcwd())  # as Lightning's default logger
            found = find_last(root)
            if found is None:
                raise FileNotFoundError(f"--ckpt_path last: no last.ckpt under {root.resolve()}; there is nothing to "
                                        "resume (run without --ckpt_path to start, or name a checkpoint file)")
            path = config.ckpt_path = str(found)
            version = found.parent.parent.name
            if config.trainer.get("logger") is None and version.startswith("version_"):
                config.trainer.logger = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                                                  init_args=Namespace(save_dir=str(root), version=version))
        checkpoint = read_checkpoint(path)
        stored, wanted = checkpoint_class(checkpoint), str(config.model.get("class_path", ""))
        if stored is not None and wanted and stored != wanted:
            raise ValueError(f"--ckpt_path: {path} is a checkpoint of {stored}, but the config's model is {wanted}")

    def before_instantiate_classes(self) -> None:
        """For a distillation config: ``--tiny``'s caps, subcommand defaults, and refusing a strategy or precision
        that cannot run it before Lightning builds the trainer (Lightning's own checks, e.g. FSDP's need for a GPU,
        would otherwise answer first and less usefully)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        PARSED["config"] = config.as_dict()  # for naming the key of a component's error (``locate``)
        class_path = str(config.model.get("class_path", "")) if config.get("model") else ""
        module, _, name = class_path.rpartition(".")
        if not module:
            return
        from .module import FarziLightningModule

        steps = config.trainer.get("max_steps")
        if isinstance(steps, int) and steps < -1:
            raise ValueError(f"trainer.max_steps must be -1 (no limit) or an integer >= 0, got {steps}")
        distillation = issubclass(getattr(importlib.import_module(module), name, object), FarziLightningModule)
        if not distillation and self.subcommand == "predict":
            raise ValueError("farzi predict decodes a distilled summary: give it a distillation config and "
                             "checkpoint (for a pretrain config, farzi test reports its metrics)")
        if self.subcommand in ("test", "validate", "predict"):
            what = "the initial summary (before any outer step)" if distillation else "an untrained model"
            if not config.get("ckpt_path") and not getattr(self, "_as_built", False):
                raise ValueError(f"--ckpt_path: farzi {self.subcommand} needs a checkpoint (a .ckpt file, or last for "
                                 f"the newest last.ckpt under trainer.default_root_dir); without one it would report "
                                 f"{what}; --ckpt_path init does that on purpose")
            if getattr(self, "_as_built", False):
                rank_zero_warn(f"--ckpt_path init: farzi {self.subcommand} reports {what}, as configured")
        if not distillation:
            return  # pretraining (LearnerModule) may use any strategy Lightning offers
        if config.trainer.get("max_epochs") is None and isinstance(steps, int) and steps > 0:
            config.trainer.max_epochs = steps  # never the limit (a step per epoch at least); the bar no longer reads -2
        if self.subcommand == "validate" and not config.trainer.get("limit_val_batches"):
            config.trainer.limit_val_batches = 1  # the distillation configs set 0 (no validation during fit)
        if config.get("tiny"):
            self._shrink(config)
        try:
            check_strategy(config.trainer.strategy)
            check_precision(config.trainer.precision)
        except ValueError as err:
            self.parser.error(str(err))

    def instantiate_trainer(self, **kwargs):
        """The trainer, writing checkpoints atomically (``AtomicCheckpointIO``) unless a plugin of the config
        writes them its own way."""
        plugins = kwargs.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("other_data") and hasattr(self.model, "allow_other_data"):
            self.model.allow_other_data = True
        self._claimed = [f for f in map(claim_version, self.trainer.loggers) if f is not None]  # held for the run

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        finally:
            for folder in getattr(self, "_claimed", []):
                release(folder / "run.lock")
                if [p.name for p in folder.iterdir()] == ["run.lock"]:  # a run refused before it wrote anything
                    (folder / "run.lock").unlink()
                    folder.rmdir()


def build(args: list[str] | None = None, run: bool = True) -> FarziCLI:
    """The CLI, run on ``args`` (None: ``sys.argv``); ``args=`` runs it in-process, e.g. from tests."""
    return FarziCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    save_config_kwargs={"overwrite": True}, args=args, run=run, parser_class=FarziParser,
                    auto_configure_optimizers=False,  # the modules take their optimisers as arguments
                    parser_kwargs={"default_env": False})


class _NoTips(logging.Filter):
    """Drops Lightning's advertising tips (``💡 Tip: ...``) from the log: nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_NoTips())


def _under_tiny(node) -> None:
    """``--tiny``: every relative path under ``runs/`` (run folders, banks, teachers) moves to ``runs/tiny/``, so
    a tiny run never mixes its checkpoints or banks with a real run's."""
    items = list(vars(node).items()) if isinstance(node, Namespace) else list(enumerate(node)) \
        if isinstance(node, list) else []
    for key, value in items:
        if isinstance(value, str) and value.startswith("runs/") and not value.startswith("runs/tiny/"):
            value = "runs/tiny/" + value[len("runs/"):]
            if isinstance(node, Namespace):
                setattr(node, key, value)
            else:
                node[key] = value
        else:
            _under_tiny(value)


#: What ``--tiny`` caps in a distillation config (config key: largest value).
TINY = {
    "model.init_args.inner_optimizer.init_args.steps": 5,
    "model.init_args.start.init_args.max_steps": 10,
    "model.init_args.summary.init_args.num_sequences": 10,
    "model.init_args.inner_batch_size": 5,
    "model.init_args.downstream.init_args.steps": 10,
    "model.init_args.downstream.init_args.seeds": 1,
    "model.init_args.downstream.init_args.eval_every": 5,
    "model.init_args.downstream.init_args.val_batches": 2,
}

def main(args: list[str] | None = None) -> None:
    """Entry point of the ``farzi`` console script. A user error ends with its one-line cause (naming the key,
    file or line) and exit status 2; ``FARZI_TRACEBACK=1`` shows the traceback instead."""
    try:
        check_yaml_files(sys.argv[1:] if args is None else args)
        build(args)
    except (*USER_ERRORS, OSError) as err:
        disk = isinstance(err, OSError) and err.errno in DISK_ERRORS
        if os.environ.get("FARZI_TRACEBACK") or not (disk or isinstance(err, USER_ERRORS)):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
