"""How small can a summary go: quality against size for the summary, the tuned teacher-labelled sample, the head
and random samples, the count floor and full data, on the test split.

    FARZI_DATA_DIR=../shared/data python benchmarks/size_curve.py benchmarks/studies/size_ml100k.yaml
    python benchmarks/size_curve.py benchmarks/studies/size_ml100k.yaml --report    # table + PNG from the JSON

A study YAML names ``configs`` (stacked like ``--config``), ``common`` CLI overrides (the tuned teacher, the
outer steps), ``sizes`` (summary rows) and ``distill_seeds`` per size (a list, or one list for all). For each
size the baselines are scored once (downstream seeds 0..n-1), then each distillation seed ``r`` distils (its
start is the teacher-labelled sample of rows drawn by stream ``r``) and its summary is scored on test before the
first outer step (``start``) and after the last (``end``) with the same downstream seeds, so "did the outer
loop add anything" is a paired difference (end − start per distillation seed and downstream seed; the
interval is over distillation seeds where there are several, else over downstream seeds). Everything lands in
``docs/results/<name>/`` as it goes (``results.json``, ``results.md``, ``size_curve.png``, and with
``export_sizes`` the compact ``<name>_<size>_seed<r>.summary.pt``, and with ``select: valid`` too the selected
summary's ``<name>_<size>_seed<r>.selected.summary.pt``); a rerun resumes a fit from its
``last.ckpt`` and skips what is recorded. With ``every_n_steps`` each distillation is also scored on the
validation split every that many outer steps (``DownstreamEvaluation``), and ``time_to_quality.png`` plots
that validation metric against the distillation's minutes on the machine (wall time of the outer steps,
evaluations excluded; the JSON also keeps the process's CPU seconds). With ``select: valid`` as well, the summary
at each distillation's best validation point (step 0, its start, included) is kept and scored on test too
(``selected``): the outer loop's length chosen on validation, as the teacher's settings were.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import yaml
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import Checkpoint

from farzi_lightning.callbacks import DownstreamEvaluation, SummaryMonitor
from farzi_lightning.cli import build
from farzi_lightning.export import save_summary, summary_payload
from farzi_lightning.files import atomic_write
from farzi_lightning.stats import interval, nested

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("popularity", "unigram")


def chosen_teacher(study: dict, size: int) -> list[str]:
    """``teacher_from``: the teacher chosen on validation by ``benchmarks/teacher_study.py`` for this size (or the
    nearest size it studied), as CLI overrides."""
    if "teacher_from" not in study:
        return []
    sizes = json.loads((ROOT / study["teacher_from"]).read_text())["sizes"]
    nearest = min((s for s in sizes if "chosen" in sizes[s]), key=lambda s: abs(int(s) - size))
    chosen = sizes[nearest]["chosen"]
    key, targets = "--model.init_args.teacher.init_args", "--model.init_args.downstream.init_args.teacher_targets"
    return [f"{key}.checkpoint={chosen['checkpoint']}", f"{key}.temperature={chosen['temperature']}",
            f"{key}.runs={chosen['runs']}", f"{targets}={chosen['targets']}"]


def cli_for(study: dict, size: int, seed: int, run_dir: Path):
    args = []
    for config in study["configs"]:
        args += ["--config", str(ROOT / config)]
    args += list(study.get("common", [])) + chosen_teacher(study, size) + [
        f"--model.init_args.summary.init_args.num_sequences={size}", f"--seed_everything={seed}",
        f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false"]
    return build(args, run=False)


def reused_baselines(study: dict, size: int) -> tuple[dict, str | None]:
    """``baselines_from``: test scores the teacher study already measured with the same config, recipe and
    downstream seeds (its ``test.tuned`` entry): every baseline of a size it studied, and for other sizes the
    ones that do not depend on the size (full data and the count floors)."""
    if "baselines_from" not in study:
        return {}, None
    sizes = json.loads((ROOT / study["baselines_from"]).read_text())["sizes"]
    tuned = {s: e["test"]["tuned"]["scores"] for s, e in sizes.items() if "tuned" in e.get("test", {})}
    if str(size) in tuned:
        return dict(tuned[str(size)]), f"{study['baselines_from']} (size {size}: every baseline)"
    if not tuned:
        return {}, None
    other = next(iter(tuned))
    fixed = {k: v for k, v in tuned[other].items() if k.rsplit("/", 1)[-1] in ("full", *FLOORS)}
    return fixed, f"{study['baselines_from']} (size {other}: {', '.join(sorted(fixed))})"


def scores(results) -> dict:
    return {f"{lname}/{cand}": score.as_dict() for (lname, cand), score in results.items()}


class StartScore(Callback):
    """Scores the summary on the test split once, before the first outer step (the distillation's start)."""

    def __init__(self) -> None:
        self.result = None

    def on_train_start(self, trainer, module) -> None:
        if trainer.global_step == 0 and self.result is None:
            self.result = scores(module.evaluate_downstream("test", ["summary"]))


class KeepBest(Callback):
    """With ``select: valid``: a copy of the summary at its best validation point so far (the study's metric, mean
    over downstream seeds, as ``curve`` recorded it), kept in the run's checkpoints across a resume."""

    def __init__(self, curve: DownstreamEvaluation, metric: str) -> None:
        self.curve, self.metric = curve, metric
        self.step, self.value, self.summary = None, None, None

    def state_dict(self) -> dict:
        return {"step": self.step, "value": self.value, "summary": self.summary}

    def load_state_dict(self, state_dict: dict) -> None:
        self.step, self.value, self.summary = state_dict["step"], state_dict["value"], state_dict["summary"]

    def _check(self, trainer, module) -> None:
        last = self.curve.history[-1] if self.curve.history else None
        if last is None or last["step"] != trainer.global_step or last["step"] == self.step:
            return
        value = next(s["mean"][self.metric] for name, s in last["scores"].items() if name.endswith("/summary"))
        if self.value is None or value > self.value:
            self.step, self.value = last["step"], value
            self.summary = {k: v.detach().clone() for k, v in module.summary.state_dict().items()}

    on_train_start = on_train_end = _check

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._check(trainer, module)


def run_size(study: dict, size: int, seeds: list[int], state: dict, out: Path, save) -> None:
    entry = state["sizes"].setdefault(str(size), {"baselines": None, "distill": {}})
    runs = ROOT / "runs" / "study" / study["name"] / str(size)
    if entry["baselines"] is None:
        cli = cli_for(study, size, 0, runs / "_baselines")
        cli.datamodule.setup("fit")
        module = cli.model
        started = time.perf_counter()
        known, source = reused_baselines(study, size)
        candidates = [c for c in ("random", "head", "teacher", "full", *FLOORS)
                      if not any(k.endswith("/" + c) for k in known)]
        entry["baselines"] = {**known, **scores(module.evaluate_downstream("test", candidates, data=cli.datamodule))}
        if source:
            entry["baselines_from"] = source
        entry["baseline_seconds"] = time.perf_counter() - started
        entry["train_tokens"] = int(cli.datamodule.train_counts().sum())
        entry["summary_tokens"] = module.summary.size_tokens
        save()
    for seed in seeds:
        record = entry["distill"].get(str(seed), {})
        if "end" in record:
            continue
        run_dir = runs / f"seed-{seed}"
        cli = cli_for(study, size, seed, run_dir)
        trainer = cli.trainer
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, (DownstreamEvaluation, SummaryMonitor))]
        curve = None
        if study.get("every_n_steps"):  # the validation curve, kept in the run's checkpoints across a resume
            curve = DownstreamEvaluation(every_n_steps=study["every_n_steps"], candidates=["summary"],
                                         results_file=str(out / f"{study['name']}_{size}_seed{seed}.valid.json"))
            trainer.callbacks.append(curve)
        best = None
        if curve is not None and study.get("select") == "valid":
            best = KeepBest(curve, metric_of(study))
            trainer.callbacks.append(best)
        checkpoint = trainer.checkpoint_callback
        checkpoint.dirpath = str(run_dir / "checkpoints")
        start = StartScore()
        start.result = record.get("start")
        trainer.callbacks.append(start)
        # Checkpoints last, as Lightning orders them: a checkpoint at an evaluated step holds that evaluation (and
        # KeepBest's choice), so a run stopped after its last step resumes with its whole curve.
        trainer.callbacks.sort(key=lambda c: isinstance(c, Checkpoint))
        last = run_dir / "checkpoints" / "last.ckpt"
        started = time.perf_counter()
        trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(last) if last.exists() else None)
        record["fit_seconds"] = time.perf_counter() - started + record.get("fit_seconds", 0.0)
        record["start"] = start.result
        record["outer_steps"] = trainer.global_step
        if curve is not None:
            record["valid"] = curve.history
        entry["distill"][str(seed)] = record
        save()
        started = time.perf_counter()
        record["end"] = scores(cli.model.evaluate_downstream("test", ["summary"]))
        record["test_seconds"] = time.perf_counter() - started
        if best is not None:  # after the end's own scoring and export: the module keeps the selected summary
            end_state = {k: v.detach().clone() for k, v in cli.model.summary.state_dict().items()}
            cli.model.summary.load_state_dict(best.summary)
            record["selected"] = scores(cli.model.evaluate_downstream("test", ["summary"]))
            record["selected_step"], record["selected_valid"] = best.step, best.value
            if size in study.get("export_sizes", []):  # the selected summary's compact file, beside the end's
                target = out / f"{study['name']}_{size}_seed{seed}.selected.summary.pt"
                save_summary(target, payload_of(cli, compact=True))
                record["selected_file"] = {"path": str(target.relative_to(ROOT)), "bytes": target.stat().st_size}
                save_summary(run_dir / "selected.dense.summary.pt", payload_of(cli, compact=False))  # compact_check
            cli.model.summary.load_state_dict(end_state)
        exported = run_dir / "checkpoints" / "summary.pt"
        save_summary(run_dir / "dense.summary.pt", payload_of(cli, compact=False))  # for benchmarks/compact_check.py
        if size in study.get("export_sizes", []) and exported.exists():
            target = out / f"{study['name']}_{size}_seed{seed}.summary.pt"
            shutil.copyfile(exported, target)
            record["file"] = {"path": str(target.relative_to(ROOT)), "bytes": target.stat().st_size,
                              "train_bytes": cli.datamodule.train_file.stat().st_size}
        save()
        print(f"[{size} seed {seed}] fit {record['fit_seconds']:.0f} s; start {record['start']}; "
              f"end {record['end']}", flush=True)


def payload_of(cli, compact: bool) -> dict:
    """The ``summary.pt`` payload of the module's summary as it is now: dense, or in the config's compact form
    (``summary_top_k`` / ``summary_rank`` / ``summary_bits``, as the module's own export at the end of a fit)."""
    module, data = cli.model, cli.datamodule
    words = data.vocabulary() if hasattr(data, "vocabulary") else [str(i) for i in range(module.summary.vocab_size)]
    form = dict(top_k=module.hparams.summary_top_k, rank=module.hparams.summary_rank,
                bits=module.hparams.summary_bits) if compact else {}
    return summary_payload(module.summary, words, module.feed, module.learner,
                           module.downstream.recipe(module.inner, module.hparams.inner_batch_size), **form)


def metric_of(study: dict) -> str:
    return study["metric"]


def values(score_dict: dict, candidate: str, metric: str) -> list[float] | None:
    for name, score in score_dict.items():
        if name.endswith("/" + candidate) and metric in score["values"]:
            return score["values"][metric]
    return None


def over_runs(ends: list[list[float]], refs: list[list[float]]):
    """end − reference, paired per downstream seed: the interval over distillation seeds where there are several
    (each seed's mean difference), else over the one distillation's downstream seeds."""
    return nested(ends, refs) if len(ends) > 1 else interval([a - b for a, b in zip(ends[0], refs[0])])


def summarise(study: dict, entry: dict) -> dict:
    """Per size: mean ± std of every candidate, and the paired end − start and end − teacher differences."""
    metric = metric_of(study)
    row: dict = {}
    for cand in ("random", "head", "teacher", "full") + FLOORS:
        v = values(entry["baselines"] or {}, cand, metric)
        if v is not None:
            row[cand] = v
    ends = [values(r["end"], "summary", metric) for r in entry["distill"].values() if "end" in r]
    starts = [values(r["start"], "summary", metric) for r in entry["distill"].values() if r.get("start")]
    if ends:
        row["summary"] = [x for e in ends for x in e]
        row["summary_runs"] = len(ends)
        if len(starts) == len(ends):
            row["start"] = [x for s in starts for x in s]
            row["end_minus_start"] = over_runs(ends, starts).as_dict()
        teacher = row.get("teacher")
        if teacher is not None:
            row["end_minus_teacher"] = over_runs(ends, [teacher] * len(ends)).as_dict()
    picked = [values(r["selected"], "summary", metric) for r in entry["distill"].values() if "selected" in r]
    if picked and len(picked) == len(ends):
        row["selected"] = [x for e in picked for x in e]
        row["selected_steps"] = [r["selected_step"] for r in entry["distill"].values() if "selected" in r]
        if len(starts) == len(picked):
            row["selected_minus_start"] = over_runs(picked, starts).as_dict()
        if row.get("teacher") is not None:
            row["selected_minus_teacher"] = over_runs(picked, [row["teacher"]] * len(picked)).as_dict()
    return row


def report(study: dict, state: dict, out: Path) -> None:
    import statistics

    metric = metric_of(study)
    names = ["summary", "start", "teacher", "head", "random", "full"] + list(FLOORS)
    keys = ["end_minus_start", "end_minus_teacher"]
    if study.get("select") == "valid":  # the summary at its best validation point, beside the end's
        names.insert(1, "selected")
        keys += ["selected_minus_start", "selected_minus_teacher"]
    lines = [f"# Size curve: `{study['name']}`", "",
             f"Command: `python benchmarks/size_curve.py benchmarks/studies/{study['name']}.yaml`. Test {metric}, "
             "mean ± std over downstream seeds (and distillation seeds for the summary); each candidate trained "
             "with patience and scored at its best validation point. `start`: the summary before the first outer "
             "step (its teacher-labelled start)." + (" `selected`: the summary at its best validation point (the "
             "outer steps chosen on validation)." if "selected" in names else ""), "",
             "| rows | % of training tokens | " + " | ".join(names) + " | "
             + " | ".join(k.replace("_minus_", " − ") + " [95%]" for k in keys) + " |",
             "|---" * (len(names) + 2 + len(keys)) + "|"]
    curve: dict[str, list[tuple[float, float, float]]] = {}
    for size, entry in sorted(state["sizes"].items(), key=lambda kv: int(kv[0])):
        row = summarise(study, entry)
        pct = 100 * entry.get("summary_tokens", 0) / max(entry.get("train_tokens", 1), 1)
        cells = []
        for name in names:
            v = row.get(name)
            if v is None:
                cells.append("")
                continue
            mean, std = statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{mean:.4f} ± {std:.4f}" if len(v) > 1 else f"{mean:.4f}")
            curve.setdefault(name, []).append((pct, mean, std))
        diffs = []
        for key in keys:
            iv = row.get(key)
            diffs.append("" if iv is None else f"{iv['mean']:+.4f} [{iv['lo']:+.4f}, {iv['hi']:+.4f}] (n={iv['n']})")
        runs = row.get("summary_runs", 0)
        lines.append(f"| {size} ({runs} distillation seed{'s' if runs != 1 else ''}) | {pct:.2f} | "
                     + " | ".join(cells) + " | " + " | ".join(diffs) + " |")
        if row.get("selected_steps"):
            lines.append(f"| | outer steps selected on validation: {row['selected_steps']} |")
    atomic_write(out / "results.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    plot(study, curve, out, metric)
    plot_time(study, state, out, metric)


def plot_time(study: dict, state: dict, out: Path, metric: str) -> None:
    """Validation metric against minutes of distillation (outer steps only), one line per size and seed."""
    runs = {(size, seed): r["valid"] for size, e in state["sizes"].items() for seed, r in e["distill"].items()
            if r.get("valid")}
    plt = pyplot() if runs else None
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_step: dict[tuple[str, int], list[tuple[float, float]]] = {}  # (size, outer step): (minutes, metric) per seed
    for i, ((size, seed), history) in enumerate(sorted(runs.items(), key=lambda kv: (int(kv[0][0]), int(kv[0][1])))):
        points = [(h["fit_seconds"] / 60, s["mean"][metric], h["step"]) for h in history
                  for s in h["scores"].values() if metric in s["mean"] and "fit_seconds" in h]
        for minutes, value, step in points:
            by_step.setdefault((size, step), []).append((minutes, value))
        if points:  # ten colours, then the same ten dashed
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, linewidth=1,
                    color=f"C{i % 10}", linestyle="-" if i < 10 else "--", label=f"{size} rows, seed {seed}")
    for size in sorted({size for size, _ in by_step}, key=int):
        steps = sorted(step for s, step in by_step if s == size and len(by_step[(s, step)]) > 1)
        if steps:  # the mean over the seeds at each evaluated outer step, at their mean minutes
            mean = [tuple(sum(v) / len(v) for v in zip(*by_step[(size, step)])) for step in steps]
            ax.plot(*zip(*mean), color="black", linewidth=2.5, label=f"{size} rows, mean of the seeds")
    ax.set_xlabel("minutes of distillation on this machine (outer steps; evaluations excluded)")
    ax.set_ylabel(f"validation {metric} (fresh learner, mean of downstream seeds)")
    ax.set_title(f"{study['name']}: time to quality")
    save_figure(plt, fig, ax, out / "time_to_quality.png")


def pyplot():
    """``matplotlib.pyplot`` on the file-only backend, or None (and a line saying so) where it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[study]')", file=sys.stderr)
        return None
    return plt


def save_figure(plt, fig, ax, path: Path) -> None:
    """Legend, layout, and an atomic write of ``path`` (a complete PNG or the previous one, never half of one)."""
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    partial = path.with_name(path.name + ".tmp")
    fig.savefig(partial, format="png", dpi=110)
    partial.replace(path)
    plt.close(fig)


def plot(study: dict, curve: dict, out: Path, metric: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    styles = {"summary": ("C0", "o", "-"), "start": ("C0", "x", ":"), "selected": ("C5", "D", "-"),
              "teacher": ("C1", "s", "-"), "head": ("C2", "^", "-"), "random": ("C3", "v", "-"),
              "full": ("black", "", "--"), "popularity": ("grey", "", ":"), "unigram": ("grey", "", ":")}
    # side by side at one size, so overlapping bars stay readable
    offsets = {"start": 0.96, "teacher": 1.04, "selected": 1.08}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ticks = set()
    for name, points in curve.items():
        color, marker, line = styles.get(name, ("C4", ".", "-"))
        xs, ys, es = zip(*points)
        if name in ("full",) + FLOORS:
            ax.axhline(ys[0], color=color, linestyle=line, linewidth=1, label=name)
            continue
        ticks.update(xs)
        ax.errorbar([x * offsets.get(name, 1.0) for x in xs], ys, yerr=es, color=color, marker=marker,
                    linestyle=line, capsize=3, label=name)
    ax.set_xscale("log")
    if metric == "ppl":  # perplexities of real samples run to thousands; the summaries' sit near full data's
        ax.set_yscale("log")
    ax.set_xticks(sorted(ticks), [f"{t:.2g}" for t in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel("summary size (% of training tokens)")
    ax.set_ylabel(f"test {metric} (fresh learner)")
    ax.set_title(f"{study['name']}: quality against size")
    save_figure(plt, fig, ax, out / "size_curve.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="the study's YAML")
    parser.add_argument("--report", action="store_true", help="only rebuild results.md and size_curve.png")
    parser.add_argument("--only", type=int, nargs="*", help="run only these sizes")
    args = parser.parse_args()
    study = yaml.safe_load(Path(args.study).read_text())
    out = ROOT / "docs" / "results" / study["name"]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    state = json.loads(path.read_text()) if path.exists() else {"study": study, "sizes": {}}
    state["study"] = study

    def save() -> None:
        text = json.dumps(state, indent=1)
        atomic_write(path, lambda f: f.write(text.encode()))
        report(study, state, out)

    if not args.report:
        seeds = study["distill_seeds"]
        for size in args.only or study["sizes"]:
            size_seeds = seeds.get(size, seeds.get("default", [0])) if isinstance(seeds, dict) else seeds
            run_size(study, size, size_seeds, state, out, save)
    save()


if __name__ == "__main__":
    main()
