"""Which full-data model(s) label a teacher-labelled sample: any checkpoint of a trajectory bank, a temperature,
an ensemble.

Soft labels carry most of what data distillation achieves, so the teacher-labelled sample is the baseline a
summary must beat, and it is tuned like the summary, on validation (``benchmarks/teacher_study.py``): small
samples often want an early checkpoint's softer predictions, a temperature, or the mean of several models.

    teacher:                                   # model.init_args.teacher in a distillation config
      class_path: farzi_lightning.Teacher
      init_args:
        banks: [runs/banks/ml100k_sasrec]
        checkpoint: 0.5                        # halfway through each run ("best", "last", a step, a fraction)
        runs: all                              # every run of the bank: an ensemble of three seeds
        temperature: 2.0

A plain bank directory (``teacher: runs/banks/ml100k_sasrec``) is ``Teacher(banks=[that])``: its best
validation checkpoint, temperature 1.

Also here: ``FullDataModels`` (a distillation's teacher and ``full`` reference, each loaded once) and
``CountModel`` (the count floor as a model: popularity for items, unigram for words).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from .parts import RecordsInit
from .trajectories import TrajectoryBank

Checkpoint = Literal["best", "last"] | int | float


class TeacherModel(nn.Module):
    """An ensemble of learners as one learner: ``forward(tokens)`` gives ``log mean_i softmax(f_i(tokens) / τ)``
    ``(B, L, V)``, log-probabilities a softmax (or a cross-entropy) reads as logits. One member at τ = 1 is the
    member itself up to a constant per position.

    Args:
        members: the full-data learners (same vocabulary).
        temperature: τ > 0; above 1 softens the predictions, below 1 sharpens them.
    """

    def __init__(self, members: list[nn.Module], temperature: float = 1.0) -> None:
        super().__init__()
        if not members:
            raise ValueError("a teacher needs at least one model")
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"teacher temperature must be a positive finite number, got {temperature}")
        self.members = nn.ModuleList(members)
        self.temperature = float(temperature)
        first = members[0]
        self.vocab_size = getattr(first, "vocab_size", None)
        self.padding_idx = getattr(first, "padding_idx", None)
        lengths = [m.max_len for m in members if getattr(m, "max_len", None) is not None]
        self.max_len = min(lengths) if lengths else None

    @property
    def feature_site(self) -> tuple[str, str] | None:
        """Where ``FeatureMatch`` reads the hidden states: the single member's own site (an ensemble of several
        has no single feature space: None)."""
        site = getattr(self.members[0], "feature_site", None) if len(self.members) == 1 else None
        return None if site is None else (f"members.0.{site[0]}", site[1])

    def forward(self, tokens: Tensor) -> Tensor:
        logp = torch.stack([torch.log_softmax(m(tokens).float() / self.temperature, -1) for m in self.members])
        return torch.logsumexp(logp, 0) - math.log(len(self.members))  # (B, L, V)


class Teacher(RecordsInit):
    """Names the teacher: which checkpoints of which banks, and at what temperature.

    Args:
        banks: trajectory bank directories (made by a pretrain config); several make an ensemble across banks.
        checkpoint: which checkpoint of each run: ``best`` (best recorded validation metric), ``last``, a step
            (the checkpoint nearest to it) or a fraction of the run in (0, 1] (nearest, e.g. 0.25).
        runs: which runs of each bank: ``best`` (the run holding the bank's best checkpoint), ``all`` (an
            ensemble of every run), or a list of run names (e.g. ``[seed-0, seed-1]``).
        temperature: divides every member's logits before the softmax.
    """

    def __init__(self, banks: list[str], checkpoint: Checkpoint = "best",
                 runs: Literal["best", "all"] | list[str] = "best", temperature: float = 1.0) -> None:
        if isinstance(banks, str):
            banks = [banks]
        if not banks:
            raise ValueError("teacher banks: name at least one trajectory bank directory")
        if isinstance(checkpoint, str) and checkpoint not in ("best", "last"):
            raise ValueError(f"teacher checkpoint must be 'best', 'last', a step or a fraction, got {checkpoint!r}")
        if isinstance(checkpoint, float) and not 0.0 < checkpoint <= 1.0:
            raise ValueError(f"teacher checkpoint: a fraction must lie in (0, 1], got {checkpoint}")
        if isinstance(checkpoint, int) and not isinstance(checkpoint, bool) and checkpoint < 0:
            raise ValueError(f"teacher checkpoint: a step must be >= 0, got {checkpoint}")
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"teacher temperature must be a positive finite number, got {temperature}")
        self.banks, self.checkpoint, self.runs, self.temperature = list(banks), checkpoint, runs, float(temperature)

    def describe(self) -> str:
        """One line for tables: ``<banks> <runs> checkpoint <which>, τ <temperature>``."""
        runs = self.runs if isinstance(self.runs, str) else ",".join(self.runs)
        return f"checkpoint {self.checkpoint}, runs {runs}, τ {self.temperature:g}"

    def indices(self, bank: TrajectoryBank) -> list[int]:
        """The bank entries this teacher takes: one per selected run."""
        best = bank.best_index()
        if self.runs == "best":
            runs = [bank.entries[best]["run"]]
        elif self.runs == "all":
            runs = bank.runs
        else:
            missing = sorted(set(self.runs) - set(bank.runs))
            if missing:
                raise ValueError(f"teacher runs: {', '.join(missing)} not in {bank.root} (it holds "
                                 f"{', '.join(bank.runs)})")
            runs = list(self.runs)
        chosen = []
        for run in runs:
            entries = [i for i, e in enumerate(bank.entries) if e["run"] == run]
            chosen.append(self._pick(bank, entries))
        return chosen

    def _pick(self, bank: TrajectoryBank, entries: list[int]) -> int:
        steps = {i: bank.entries[i]["step"] for i in entries}
        if self.checkpoint == "best":
            return bank.best_index(entries)
        if self.checkpoint == "last":
            return max(entries, key=lambda i: steps[i])
        if isinstance(self.checkpoint, float):
            last = max(bank.entries[i].get("max_step") or steps[i] for i in entries)
            target = self.checkpoint * last
        else:
            target = self.checkpoint
        return min(entries, key=lambda i: (abs(steps[i] - target), steps[i]))

    def model(self, fingerprint: str | None = None, vocab_size: int | None = None,
              map_location: str | torch.device = "cpu") -> TeacherModel:
        """The teacher as one learner (``TeacherModel``); banks made on other data are refused."""
        members = []
        for path in self.banks:
            bank = TrajectoryBank(path, fingerprint=fingerprint, vocab_size=vocab_size)
            members += [bank.model(i, map_location) for i in self.indices(bank)]
        return TeacherModel(members, self.temperature).to(map_location).eval()


def as_teacher(value: str | dict | Teacher | None) -> Teacher | None:
    """A config's ``teacher`` (a bank directory, a ``Teacher`` or its recorded config) as a ``Teacher``."""
    if value is None or isinstance(value, Teacher):
        return value
    if isinstance(value, dict):
        if value.get("class_path", "").rpartition(".")[2] != "Teacher":
            raise ValueError(f"model.init_args.teacher: expected a bank directory or farzi_lightning.Teacher, got "
                             f"{value.get('class_path')!r}")
        return Teacher(**value.get("init_args", {}))
    return Teacher(banks=[str(value)])


class FullDataModels:
    """A distillation's full-data models, each loaded once: the ``teacher`` that labels (``spec``, else the start
    point's model) and the ``full`` reference (the best checkpoint of the spec's first bank, else the start
    point's model). Refusals name ``model.init_args.teacher``.

    Args:
        spec: the ``Teacher`` (None: the start point's model serves).
        start: the start point (its ``teacher(map_location)``).
        seq_len: the summary's length: a teacher must read its L - 1 inputs.
    """

    def __init__(self, spec: Teacher | None, start, seq_len: int) -> None:
        self.spec, self.start, self.seq_len = spec, start, seq_len
        self._models: dict[str, nn.Module | None] = {}

    def teacher(self, data, device: str | torch.device) -> nn.Module | None:
        """The model that labels; None when there is none."""
        if "teacher" not in self._models:
            if self.spec is not None:
                model = self._load(lambda: self.spec.model(data.fingerprint, data.vocab_size, device))
            else:
                model = self.start.teacher(device)
            reads = getattr(model, "max_len", None)
            if reads is not None and self.seq_len - 1 > reads:
                raise ValueError(f"model.init_args.teacher: the full-data model reads at most {reads} tokens, but "
                                 f"model.init_args.summary.init_args.seq_len={self.seq_len} needs {self.seq_len - 1}"
                                 "; pretrain with a longer max_len or shorten the summary")
            self._models["teacher"] = None if model is None else model.requires_grad_(False)
        return self._models["teacher"]

    def full(self, data, device: str | torch.device) -> nn.Module | None:
        """The ``full`` reference; None when there is none."""
        if "full" not in self._models:
            if self.spec is None:
                model = self.start.teacher(device)
            else:
                model = self._load(lambda: TrajectoryBank(self.spec.banks[0], fingerprint=data.fingerprint,
                                                          vocab_size=data.vocab_size).model(map_location=device))
            self._models["full"] = None if model is None else model.requires_grad_(False)
        return self._models["full"]

    @staticmethod
    def _load(load) -> nn.Module:
        try:
            return load()
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"model.init_args.teacher: {err}") from err


class CountModel(nn.Module):
    """The count floor as a learner: every position scores token t by ``log(count_t)`` (popularity / unigram)."""

    def __init__(self, counts: Tensor, padding_idx: int | None = None) -> None:
        super().__init__()
        counts = counts.double().clamp_min(0.5)  # a token never seen in training keeps a finite score
        if padding_idx is not None:
            counts[padding_idx] = 0.5
        self.register_buffer("log_p", torch.log(counts / counts.sum()).float())

    def forward(self, tokens: Tensor) -> Tensor:
        return self.log_p.expand(*tokens.shape[:2], -1)  # (B, L, V)
