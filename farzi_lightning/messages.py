"""What the ``farzi`` command says when the input is wrong: one line naming the config key, file or line and what
was expected (``docs/errors.md``), never a traceback for a user error."""

from __future__ import annotations

import difflib
import errno
import inspect
import re
import sys
from pathlib import Path

from lightning.fabric.utilities.exceptions import MisconfigurationException


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


#: Exceptions that describe bad input (a config value, a file, a checkpoint): shown as one line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               MisconfigurationException)

#: ``OSError`` numbers that describe the machine, not a bug: shown as one line naming the file.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


#: The parsed config of the running command (set by the CLI), for naming a component's key (``locate``).
PARSED: dict = {}


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


def one_line(err: BaseException) -> str:
    """What a user error says: its cause, with the config key or file in front."""
    if isinstance(err, OSError) and err.errno in DISK_ERRORS:
        return (f"{err.filename or 'writing a file'}: {err.strerror}; free space (or write elsewhere, e.g. "
                "trainer.default_root_dir), then resume with --ckpt_path last")
    cause = root_cause(err)
    message = keyed(str(cause), locate(cause, PARSED.get("config", {})))
    if isinstance(cause, FileNotFoundError) and cause.filename and str(cause.filename) not in message:
        message = f"{cause.filename}: {message}"
    return message
