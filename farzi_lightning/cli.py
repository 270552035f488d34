"""The ``farzi`` command: a LightningCLI over any module and datamodule of this package.

    farzi fit --config configs/ml100k_pretrain.yaml
    farzi fit --config configs/ptb_pretrain.yaml --config configs/overrides/tiny.yaml
    farzi test --config configs/ml100k_pretrain.yaml --ckpt_path <checkpoint>

The data's vocabulary size (or item-id count) is linked into the learner, so no YAML repeats it.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import inspect
import logging
import os
import re
import sys
from pathlib import Path

from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from .checkpoints import AtomicCheckpointIO, checkpoint_class, find_last, read_checkpoint
from .distributed import check_precision, check_strategy
from .runs import claim_version, release


def condense(message: str) -> str:
    """jsonargparse's nested union report as one line: the full key and the innermost reason."""
    keys = list(dict.fromkeys(re.findall(r'Parser key "([^"]+)"', message)))  # union branches repeat the path
    if not keys:
        return message.strip().splitlines()[0] if message.strip() else message
    tail = message.rsplit(f'Parser key "{keys[-1]}"', 1)[1].lstrip(":").strip()
    skip = ("Expected a <class 'NoneType'>", "Given value", "Subtypes:", "Errors:", "Does not validate against any",
            "Problem with given class_path")
    reasons = [line.strip().lstrip("- ") for line in tail.splitlines()
               if line.strip() and not line.strip().lstrip("- ").startswith(skip)]
    reason = reasons[0].split(". Got value: Namespace(")[0] if reasons else ""
    key = ".init_args.".join(keys)
    unknown = re.fullmatch(r"Option '([^']+)' is not accepted", reason)
    classes = re.findall(r"Problem with given class_path '([^']+)'", tail)
    if unknown and classes:
        return f"{key}.init_args.{unknown.group(1)}: not an argument of {classes[-1]}" + _accepted(classes[-1],
                                                                                                  unknown.group(1))
    return f"{key}: {reason}" if reason else key


def _accepted(class_path: str, given: str) -> str:
    """``; did you mean 'steps'? It takes: steps, lr, ...`` for a class the parser has already imported."""
    module, _, name = class_path.rpartition(".")
    cls = getattr(sys.modules.get(module), name, None)
    if cls is None:
        return ""
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    close = difflib.get_close_matches(given, params, n=1)
    return (f"; did you mean {close[0]!r}?" if close else "") + f" It takes: {', '.join(params)}"


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
        _PARSED["config"] = config.as_dict()  # for naming the key of a component's error (``locate``)
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

#: Exceptions that describe bad input (a config value, a file, a checkpoint): shown as one line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               MisconfigurationException)

#: ``OSError`` numbers that describe the machine, not a bug: shown as one line naming the file.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


_PARSED: dict = {}


#: How a message that already names its config key or file begins.
KEYED = ("model.", "data.", "trainer.", "--", "/", "./")


def locate(cause: BaseException, config: dict) -> tuple[str, str] | None:
    """``(config key, class name)`` of the component whose constructor raised ``cause``: the innermost
    ``__init__`` on the traceback whose class the parsed config names (e.g. ``model.init_args.inner_optimizer``
    for ``ReverseAdam``); None when unknown."""
    frames, tb = [], cause.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "__init__" and "self" in tb.tb_frame.f_locals:
            frames.append((type(tb.tb_frame.f_locals["self"]).__name__, dict(tb.tb_frame.f_locals)))
        tb = tb.tb_next

    def walk(node, key: str, name: str):
        if isinstance(node, dict):
            path = node.get("class_path")
            if isinstance(path, str) and path.rpartition(".")[2] == name:
                yield key, node.get("init_args") or {}
            for k, v in node.items():
                yield from walk(v, f"{key}.{k}" if key else k, name)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{key}[{i}]", name)

    def agrees(init_args: dict, given: dict) -> bool:  # two components of one class: the one built with these
        return all(given.get(k, v) == v for k, v in init_args.items() if isinstance(v, (str, int, float, bool)))

    for name, given in reversed(frames):
        found = list(walk(config, "", name))
        if found:
            return next((k for k, args in found if agrees(args, given)), found[0][0]), name
    return None


def keyed(message: str, where: tuple[str, str] | None) -> str:
    """``message`` with the config key in front, unless it already names one (or a file)."""
    if where is None or message.startswith(KEYED):
        return message
    key, name = where
    words = message.split(" ", 1)
    if len(words) == 2 and words[0].lower() == name.lower():  # "SummaryWarmStart max_steps must ..."
        message = words[1]
    first = message.split(" ", 1)[0]
    if first.isidentifier() and " must " in message:
        return f"{key}.init_args.{message}"
    return f"{key}: {message}"


def root_cause(err: BaseException) -> BaseException:
    """The user error to show: the outermost one of the chain that names its key or file (a re-raise that
    added the key), else the innermost (jsonargparse wraps a constructor's error in its union-type report; a
    failed download wraps the socket's error in ours)."""
    chain, seen = [err], {id(err)}
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        chain.append(inner)
    users = [e for e in chain if isinstance(e, USER_ERRORS)]
    return next((e for e in users if str(e).startswith(KEYED)), users[-1] if users else err)


def check_yaml_files(args: list[str]) -> None:
    """Every ``--config`` file parses as YAML; else ``ValueError`` with its ``file:line:column`` (jsonargparse
    reports the position but not the file)."""
    import yaml

    files = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    files += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for name in files:
        path = Path(name)
        if not path.is_file():
            continue  # jsonargparse reports a missing file (or a config given inline) itself
        try:
            yaml.safe_load(path.read_text())
        except yaml.MarkedYAMLError as err:
            mark, context = err.problem_mark or err.context_mark, err.context_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            detail = f" ({err.context} at line {context.line + 1}, column {context.column + 1})" if context else ""
            raise ValueError(f"{where}: invalid YAML: {err.problem or err.context}{detail}") from None
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None


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


def one_line(err: BaseException) -> str:
    """What a user error says: its cause, with the config key or file in front."""
    if isinstance(err, OSError) and err.errno in DISK_ERRORS:
        return (f"{err.filename or 'writing a file'}: {err.strerror}; free space (or write elsewhere, e.g. "
                "trainer.default_root_dir), then resume with --ckpt_path last")
    cause = root_cause(err)
    message = keyed(str(cause), locate(cause, _PARSED.get("config", {})))
    if isinstance(cause, FileNotFoundError) and cause.filename and str(cause.filename) not in message:
        message = f"{cause.filename}: {message}"
    return message


if __name__ == "__main__":
    main()
