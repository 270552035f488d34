"""The strongest teacher-labelled sample: which checkpoint labels it, at what temperature, one model or an
ensemble, and in which form (the teacher's own targets beside real inputs, or one lifted distribution per
position), chosen on the validation split; the choice and the untuned sample then scored on test.

    FARZI_DATA_DIR=../shared/data python benchmarks/teacher_study.py benchmarks/studies/teacher_ml100k.yaml

A study YAML names ``configs`` (stacked like ``--config``), ``common`` CLI overrides, the ``sizes`` (summary
rows), the ``bank``, the screening ``seeds`` and the ``stages`` of a coordinate search: each stage varies one
setting of ``farzi_lightning.Teacher`` (``checkpoint``, ``temperature``, ``runs``) or the form
(``targets``), keeping the best of the stages before it (best validation mean). Everything is written as it
goes to ``docs/results/<name>/``: ``results.json`` (every evaluation: setting, split, per-seed values, best
steps, seconds), ``results.md``, and per size ``<size>.teacher.summary.pt``: the chosen teacher-labelled
sample (downstream seed 0's rows) in the compact ``summary.pt`` format, which any trainer can retrain
(``benchmarks/check_summary.py``). A rerun skips what is already in ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from farzi_lightning import Teacher
from farzi_lightning.cli import build
from farzi_lightning.downstream import Downstream, paired_differences
from farzi_lightning.export import save_summary, size_report, summary_payload
from farzi_lightning.files import atomic_write
from farzi_lightning.summaries import Feed

ROOT = Path(__file__).resolve().parents[1]
UNTUNED = {"checkpoint": "best", "temperature": 1.0, "runs": "best", "targets": "lifted"}


def module_for(study: dict, size: int):
    args = []
    for config in study["configs"]:
        args += ["--config", str(ROOT / config)]
    args += list(study.get("common", [])) + [f"--model.init_args.summary.init_args.num_sequences={size}",
                                             "--trainer.enable_progress_bar=false"]
    cli = build(args, run=False)
    cli.datamodule.setup("fit")
    return cli.model, cli.datamodule


def key(setting: dict) -> str:
    return json.dumps(setting, sort_keys=True)


def evaluate(module, data, bank: str, setting: dict, split: str, seeds: int, candidates: list[str]):
    """Score ``candidates`` with the teacher of ``setting`` on ``split`` (fresh harness: nothing cached)."""
    teacher = Teacher([bank], checkpoint=setting["checkpoint"], runs=setting["runs"],
                      temperature=setting["temperature"])
    module.teacher_spec = teacher
    module._aux.pop("teacher", None)
    base = module.downstream
    harness = Downstream(candidates=candidates, seeds=seeds, optimizer=base.optimizer, lr=base.lr, steps=base.steps,
                         batch_size=base.batch_size, eval_every=base.eval_every, val_batches=base.val_batches,
                         k=base.k, patience=base.patience, teacher_targets=setting["targets"])
    module.downstream = harness
    try:
        return module.evaluate_downstream(split, candidates, data=data), harness
    finally:
        module.downstream = base


def record(results: dict, store: dict) -> None:
    for (lname, cand), score in results.items():
        store[f"{lname}/{cand}"] = score.as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="the study's YAML")
    parser.add_argument("--export-only", action="store_true",
                        help="only write the chosen samples' files again (the study must have chosen)")
    args = parser.parse_args()
    study = yaml.safe_load(Path(args.study).read_text())
    out = ROOT / "docs" / "results" / study["name"]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    state = json.loads(path.read_text()) if path.exists() else {"study": study, "sizes": {}}

    def save() -> None:
        text = json.dumps(state, indent=1)
        atomic_write(path, lambda f: f.write(text.encode()))
        report(state, out)

    for size in study["sizes"]:
        if args.export_only:
            entry = state["sizes"][str(size)]
            module, data = module_for(study, size)
            _, harness = evaluate(module, data, study["bank"], entry["chosen"], "test", study["final_seeds"], [])
            entry["file"] = export(study, size, module, data, harness, out)
            continue
        run_size(study, size, state, out, save)
    save()


def run_size(study: dict, size: int, state: dict, out: Path, save) -> None:
    """Screen the stages on validation, then score the chosen and the untuned sample on test."""
    metric = study["metric"]
    sign = -1.0 if metric == "ppl" else 1.0
    entry = state["sizes"].setdefault(str(size), {"valid": {}, "test": {}})
    module, data = module_for(study, size)
    learner_name = next(iter(module.downstream.learner_configs(module.learner)))

    def valid_mean(setting: dict) -> float:
        scores = entry["valid"][key(setting)]["scores"][f"{learner_name}/teacher"]
        return scores["mean"][metric]

    def screen(setting: dict) -> float:
        if key(setting) not in entry["valid"]:
            started = time.perf_counter()
            results, _ = evaluate(module, data, study["bank"], setting, "valid", study["seeds"], ["teacher"])
            scores: dict = {}
            record(results, scores)
            entry["valid"][key(setting)] = {"setting": setting, "scores": scores,
                                            "seconds": time.perf_counter() - started}
            save()
            print(f"[{size}] valid {setting}: {valid_mean(setting):.4f}", flush=True)
        return valid_mean(setting)

    best = dict(study.get("start", UNTUNED))
    screen(UNTUNED)
    screen(best)
    for stage in study["stages"]:
        (name, values), = stage.items()
        for value in values:
            screen(dict(best, **{name: value}))
        candidates = [dict(best, **{name: v}) for v in values] + [best]
        best = max(candidates, key=lambda s: sign * screen(s))
    entry["chosen"] = best
    save()
    # ---- test: the chosen and the untuned sample, with every reference, 3 seeds, paired ----
    for label, setting in (("tuned", best), ("untuned", UNTUNED)):
        if label in entry["test"]:
            continue
        started = time.perf_counter()
        candidates = ["teacher"] + (["random", "head", "full", "popularity", "unigram"] if label == "tuned" else [])
        results, harness = evaluate(module, data, study["bank"], setting, "test", study["final_seeds"], candidates)
        scores: dict = {}
        record(results, scores)
        entry["test"][label] = {"setting": setting, "scores": scores, "seconds": time.perf_counter() - started}
        if label == "tuned":
            diffs = paired_differences(results, "teacher")
            entry["test"]["paired"] = {f"{o}/{m}": iv.as_dict() for (_, o, m), iv in diffs.items()}
            entry["file"] = export(study, size, module, data, harness, out)
        save()
        print(f"[{size}] test {label}: {scores}", flush=True)


def export(study: dict, size: int, module, data, harness: Downstream, out: Path) -> dict:
    """The chosen sample itself (downstream seed 0's rows), as any trainer can read it: compact under
    ``docs/results/<name>/``, dense under ``runs/study/<name>/`` (for ``benchmarks/compact_check.py``)."""
    baseline = harness.baseline("teacher", module.summary, data.real_sequences(), module.teacher_model(), 0)  # cached
    recipe = harness.recipe(module.inner, module.hparams.inner_batch_size)
    vocabulary = data.vocabulary() if hasattr(data, "vocabulary") else [str(i) for i in range(baseline.vocab_size)]
    file = out / f"{study['name']}_{size}.teacher.summary.pt"
    dense = ROOT / "runs" / "study" / study["name"] / f"{study['name']}_{size}.teacher.dense.summary.pt"
    dense.parent.mkdir(parents=True, exist_ok=True)
    save_summary(dense, summary_payload(baseline, vocabulary, Feed("hard"), module.learner, recipe))
    save_summary(file, summary_payload(baseline, vocabulary, Feed("hard"), module.learner, recipe,
                                       top_k=study.get("top_k"), rank=study.get("rank")))
    return {"path": str(file.relative_to(ROOT)), "dense": str(dense.relative_to(ROOT)),
            "report": size_report(file.relative_to(ROOT), data.train_file), "bytes": file.stat().st_size,
            "train_bytes": data.train_file.stat().st_size}


def report(state: dict, out: Path) -> None:
    study = state["study"]
    metric = study["metric"]
    lines = [f"# Teacher-labelled sample: `{study['name']}`", "",
             f"Command: `python benchmarks/teacher_study.py benchmarks/studies/{study['name']}.yaml`. Screening on "
             f"validation with {study['seeds']} downstream seeds; test with {study['final_seeds']}. Metric: {metric} "
             "(mean ± std over seeds; test at each seed's best validation point).", ""]
    for size, entry in state["sizes"].items():
        lines += [f"## {size} rows", "", "| setting | valid | best steps | seconds |", "|---|---|---|---|"]
        for item in entry["valid"].values():
            (name, score), = [(n, s) for n, s in item["scores"].items() if n.endswith("/teacher")]
            s = item["setting"]
            label = f"checkpoint {s['checkpoint']}, τ {s['temperature']}, runs {s['runs']}, targets {s['targets']}"
            lines.append(f"| {label} | {score['mean'][metric]:.4f} ± {score['std'][metric]:.4f} | "
                         f"{'/'.join(map(str, score['best_steps']))} | {item['seconds']:.0f} |")
        if "chosen" in entry:
            lines += ["", f"Chosen on validation: `{entry['chosen']}`.", ""]
        if entry.get("test"):
            lines += ["| test | " + " | ".join(["candidate", metric, "best steps"]) + " |", "|---|---|---|---|"]
            for label in ("tuned", "untuned"):
                if label not in entry["test"]:
                    continue
                for name, score in entry["test"][label]["scores"].items():
                    if label == "untuned" and not name.endswith("/teacher"):
                        continue
                    value = score["mean"].get(metric)
                    if value is None:
                        continue
                    lines.append(f"| {label} | {name} | {value:.4f} ± {score['std'][metric]:.4f} | "
                                 f"{'/'.join(map(str, score['best_steps']))} |")
            for name, iv in entry["test"].get("paired", {}).items():
                lines.append(f"| paired | teacher − {name} | {iv['mean']:+.4f} [{iv['lo']:+.4f}, {iv['hi']:+.4f}] | |")
        if "file" in entry:
            lines += ["", f"File: {entry['file']['report']}"]
        lines.append("")
    atomic_write(out / "results.md", lambda f: f.write("\n".join(lines).encode()))


if __name__ == "__main__":
    main()
