"""Quality study: a named grid of distillation settings, each distilled and scored by the downstream harness.

    FARZI_DATA_DIR=../shared/data python benchmarks/study.py benchmarks/studies/ml100k_small.yaml
    python benchmarks/study.py benchmarks/studies/ml100k_small.yaml --report   # tables + plots from the JSON

A grid YAML names ``configs`` (stacked like ``--config``), ``common`` CLI overrides, ``every_n_steps`` (how
often the ``DownstreamEvaluation`` callback scores the summary on the validation split) and ``variants``
(name -> extra overrides). For each variant it fits (resuming from its ``last.ckpt`` when one exists), then
scores the summary on the test split at the end. The same-size baselines and floors are scored once, with the
first variant's settings. Everything lands under ``docs/results/<name>/`` as it goes: ``<variant>.json``
(validation history, test scores, seconds), ``baselines.json``, ``<variant>.summary.pt``, and after each
variant ``results.md`` (tables) and ``curves.png`` (validation metric against outer step). Settings are chosen
on validation; the test column is reported, never tuned on. ``baselines`` (optional) names the baseline
candidates to score (default: every one of the harness's but the summary).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import yaml
from lightning.pytorch.callbacks import Checkpoint

from farzi_lightning.callbacks import DownstreamEvaluation
from farzi_lightning.cli import build
from farzi_lightning.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def write_json(path: Path, value) -> None:
    text = json.dumps(value, indent=1)
    atomic_write(path, lambda f: f.write(text.encode()))


def cli_for(grid: dict, variant: list[str], run_dir: Path):
    args = []
    for config in grid["configs"]:
        args += ["--config", str(ROOT / config)]
    args += list(grid.get("common", [])) + list(variant)
    args += [f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false",
             "--trainer.enable_model_summary=false"]
    return build(args, run=False)


def summary_scores(results) -> dict:
    return {f"{lname}/{cand}": score.as_dict() for (lname, cand), score in results.items()}


def run_variant(grid: dict, name: str, out: Path, runs: Path) -> None:
    record_path = out / f"{name}.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if "test" in record:
        print(f"[{name}] done already", flush=True)
        return
    run_dir = runs / name
    cli = cli_for(grid, grid["variants"][name] or [], run_dir)
    checkpoint = cli.trainer.checkpoint_callback
    checkpoint.dirpath = str(run_dir / "checkpoints")
    history = out / f"{name}.history.json"
    # The config's own DownstreamEvaluation (if any) is replaced: one evaluation per check.
    cli.trainer.callbacks = [c for c in cli.trainer.callbacks if not isinstance(c, DownstreamEvaluation)]
    callback = DownstreamEvaluation(every_n_steps=grid.get("every_n_steps", 20), candidates=["summary"],
                                    results_file=str(history))
    cli.trainer.callbacks.append(callback)
    cli.trainer.callbacks.sort(key=lambda c: isinstance(c, Checkpoint))  # checkpoints last: each holds its evaluation
    last = run_dir / "checkpoints" / "last.ckpt"
    started = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(last) if last.exists() else None)
    fit_seconds = time.perf_counter() - started + record.get("fit_seconds", 0.0)
    record = {"variant": grid["variants"][name], "fit_seconds": fit_seconds, "outer_steps": cli.trainer.global_step,
              "valid": callback.history}
    write_json(record_path, record)
    started = time.perf_counter()
    results = cli.model.evaluate_downstream("test", ["summary"])
    cross = test_learners(grid, cli.model)
    if cross:
        results.update(evaluate(cli.model, cli.datamodule, "test", ["summary"], learners=cross))
    record["test"] = summary_scores(results)
    record["test_seconds"] = time.perf_counter() - started
    write_json(record_path, record)
    exported = run_dir / "checkpoints" / "summary.pt"
    if exported.exists():
        shutil.copyfile(exported, out / f"{name}.summary.pt")
    means = {k: {m: round(v, 4) for m, v in score["mean"].items()} for k, score in record["test"].items()}
    print(f"[{name}] fit {fit_seconds:.0f} s, test {means}", flush=True)


def test_learners(grid: dict, module) -> list[str]:
    """Names of the grid's extra (cross-architecture) learners, added to the module's harness: scored on the
    test split only, so the validation curves stay cheap."""
    extra = grid.get("test_learners") or []
    if not extra:
        return []
    before = set(module.downstream.learner_configs(module.learner))
    module.downstream.learners = list(extra)
    return [n for n in module.downstream.learner_configs(module.learner) if n not in before]


def evaluate(module, data, split: str, candidates: list[str], learners: list[str] | None = None):
    """The module's own harness, teacher and full-data reference (as ``farzi test``), outside a Trainer."""
    return module.evaluate_downstream(split, candidates, data=data, learners=learners)


def run_baselines(grid: dict, out: Path, runs: Path) -> None:
    path = out / "baselines.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    first = next(iter(grid["variants"]))
    cli = cli_for(grid, grid["variants"][first] or [], runs / "_baselines")
    module = cli.model
    candidates = grid.get("baselines") or [c for c in module.downstream.candidates if c != "summary"]
    if "test" not in record:
        for split in ("valid", "test"):
            started = time.perf_counter()
            record[split] = summary_scores(evaluate(module, cli.datamodule, split, candidates))
            record[f"{split}_seconds"] = time.perf_counter() - started
        record["recipe"] = module.downstream.recipe(module.inner, module.hparams.inner_batch_size)
        write_json(path, record)
    cross = [n for n in test_learners(grid, module) if not any(k.startswith(n + "/") for k in record["test"])]
    if cross:
        record["test"].update(summary_scores(evaluate(module, cli.datamodule, "test", candidates, cross)))
        write_json(path, record)


def report(grid: dict, out: Path) -> None:
    baselines = json.loads((out / "baselines.json").read_text()) if (out / "baselines.json").exists() else {}
    records = {n: json.loads((out / f"{n}.json").read_text()) for n in grid["variants"] if (out / f"{n}.json").exists()}
    metric = grid.get("metric", "hr@10")
    lines = [f"# Study `{grid['name']}`", "", f"Grid: `{grid['file']}`. Command: `python benchmarks/study.py "
             f"{grid['file']}`.", "", f"Metric: {metric}, mean ± std over downstream seeds (fresh learners); "
             "valid = at the end of distillation, test = at the best validation point of downstream training.", "",
             "| candidate | outer steps | fit s | valid (start) | valid (end) | test |", "|---|---|---|---|---|---|"]

    def cell(scores: dict, key: str | None = None) -> str:
        for name, score in scores.items():
            if key is None or name.endswith("/" + key):
                if metric in score["mean"]:
                    return f"{score['mean'][metric]:.4f} ± {score['std'][metric]:.4f}"
        return ""

    for name, rec in records.items():
        valid = rec.get("valid", [])
        start = cell(valid[0]["scores"]) if valid else ""
        end = cell(valid[-1]["scores"]) if valid else ""
        lines.append(f"| {name} | {rec.get('outer_steps', '')} | {rec.get('fit_seconds', 0):.0f} | {start} | {end} | "
                     f"{cell(rec.get('test', {}))} |")
    for key in baselines.get("valid", {}):
        lines.append(f"| baseline `{key}` | | | | {cell({key: baselines['valid'][key]})} | "
                     f"{cell({key: baselines['test'][key]})} |")
    atomic_write(out / "results.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    plot(grid, records, baselines, out, metric)


def plot(grid: dict, records: dict, baselines: dict, out: Path, metric: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no curves.png (pip install matplotlib)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    # One colour per variant from a 20-colour map, and a marker and line style that cycle on other periods, so
    # no two of up to 20 x 8 lines look alike.
    colours, markers, lines = plt.get_cmap("tab20").colors, "osD^vP*X", ("-", "--", "-.", ":")
    for i, (name, rec) in enumerate(records.items()):
        points = [(h["step"], s["mean"][metric]) for h in rec.get("valid", []) for s in h["scores"].values()
                  if metric in s["mean"]]
        if points:
            ax.plot(*zip(*points), color=colours[i % len(colours)], marker=markers[i % len(markers)],
                    linestyle=lines[(i // len(colours)) % len(lines)], markersize=4, label=name)
    for key, score in baselines.get("valid", {}).items():  # baselines: a labelled band of mean ± std
        if metric in score["mean"]:
            mean, std = score["mean"][metric], score["std"].get(metric, 0.0)
            ax.axhspan(mean - std, mean + std, color="grey", alpha=0.15, linewidth=0)
            ax.axhline(mean, color="grey", linewidth=0.8)
            ax.annotate(f"{key.rpartition('/')[2]} {mean:.3g}", (1.0, mean), xycoords=("axes fraction", "data"),
                        xytext=(3, 0), textcoords="offset points", fontsize=7, color="dimgrey", va="center")
    ax.set_xlabel("outer step")
    ax.set_ylabel(f"validation {metric} (fresh learner)")
    ax.set_title(f"{grid['name']}: summary vs same-size baselines")
    ax.legend(fontsize=7, ncol=2 if len(records) > 8 else 1, loc="best")
    fig.tight_layout()
    fig.savefig(out / "curves.png.tmp", format="png", dpi=110)
    Path(out / "curves.png.tmp").replace(out / "curves.png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="the study's YAML")
    parser.add_argument("--only", nargs="*", help="run only these variants")
    parser.add_argument("--report", action="store_true", help="only rebuild results.md and curves.png")
    args = parser.parse_args()
    grid = yaml.safe_load(Path(args.grid).read_text())
    grid["file"] = str(Path(args.grid))
    out = ROOT / "docs" / "results" / grid["name"]
    runs = ROOT / "runs" / "study" / grid["name"]
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        run_baselines(grid, out, runs)
        report(grid, out)
        for name in args.only or grid["variants"]:
            run_variant(grid, name, out, runs)
            report(grid, out)
    report(grid, out)


if __name__ == "__main__":
    main()
