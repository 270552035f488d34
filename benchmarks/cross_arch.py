"""Cross-architecture rows of a size-curve study: fresh learners of another architecture trained on its committed
summaries and on the same-size baselines (the teacher-labelled sample first), scored like the study's own rows.

    FARZI_DATA_DIR=../shared/data python benchmarks/cross_arch.py benchmarks/studies/long_ml100k.yaml --learner gru
    FARZI_DATA_DIR=../shared/data python benchmarks/cross_arch.py benchmarks/studies/size_ptb.yaml --learner lstm \
        --sizes 200 --candidates teacher --val-batches 20
    FARZI_DATA_DIR=../shared/data python benchmarks/cross_arch.py benchmarks/studies/select_ml100k.yaml --learner gru \
        --selected      # the summaries chosen on validation (cross_<learner>_selected.json)

``--learner`` names a preset (``gru``: a 1-layer GRU ``RNNLM``, d=32, for ML-100k; ``lstm``: a 1-layer LSTM,
d=64, for PTB) or gives the architecture as YAML, ``{class_path: ..., init_args: {...}}``.

The summaries are the study's committed compact files (``docs/results/<name>/<name>_<size>_seed<r>.summary.pt``,
what a fresh clone holds); the baselines come from the study's own config for each size (its tuned teacher,
downstream recipe and seeds 0..n-1), so seed s of every candidate shares the learner's initialisation and batch
order. Reported: mean ± std per candidate and the paired summary − teacher-labelled difference with its 95%
interval over distillation seeds (or downstream seeds with one summary). Writes
``docs/results/<name>/cross_<learner>.json`` and ``.md`` as it goes; a rerun skips what is recorded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

from farzi_lightning import load_summary
from farzi_lightning.files import atomic_write
from farzi_lightning.stats import interval

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"gru": {"class_path": "farzi_lightning.learners.RNNLM",
                   "init_args": {"d_model": 32, "n_layers": 1, "cell": "gru", "max_len": 50}},
           "lstm": {"class_path": "farzi_lightning.learners.RNNLM",
                    "init_args": {"d_model": 64, "n_layers": 1, "cell": "lstm", "max_len": 35}}}
_spec = importlib.util.spec_from_file_location("size_curve", ROOT / "benchmarks" / "size_curve.py")
size_curve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(size_curve)


def summary_files(study: dict, size: int, selected: bool = False) -> dict[int, Path]:
    """The study's committed summaries of this size, by distillation seed: the end of each distillation
    (``<name>_<size>_seed<r>.summary.pt``), or with ``selected`` its summary at the best validation point
    (``<name>_<size>_seed<r>.selected.summary.pt``, a ``select: valid`` study's)."""
    out = ROOT / "docs" / "results" / study["name"]
    files = {}
    for path in sorted(out.glob(f"{study['name']}_{size}_seed*.summary.pt")):
        seed, _, kind = path.name.split("_seed")[1].removesuffix(".summary.pt").partition(".")
        if kind == ("selected" if selected else ""):
            files[int(seed)] = path
    return files


def score_values(results: dict, learner: str, candidate: str, metric: str) -> list[float]:
    return results[f"{learner}/{candidate}"]["values"][metric]


def report(state: dict, metric: str, out: Path) -> None:
    learner = state["learner_name"]
    lower = metric == "ppl"
    lines = [f"# Cross-architecture rows: `{state['study']}`, {learner}", "",
             f"Command: `{state['command']}`. Test {metric} of fresh {learner} learners, mean ± std over downstream "
             "seeds (and distillation seeds for the summary), each trained with patience and scored at its best "
             f"validation point{' (lower is better)' if lower else ''}. Summaries: the study's committed files.", "",
             "`summary − teacher`: the interval over distillation seeds, against the teacher-labelled sample's mean "
             "as a fixed reference; `per downstream seed`: each downstream seed's mean over the summaries against "
             "that seed's teacher-labelled run, which carries the sample's own run-to-run spread.", "",
             "| rows | summary | teacher-labelled | head | random | summary − teacher [95%] | per downstream seed |",
             "|---|---|---|---|---|---|---|"]
    for size, entry in sorted(state["sizes"].items(), key=lambda kv: int(kv[0])):
        ends = [score_values(r, learner, "summary", metric) for r in entry["summaries"].values()]
        cells = []
        flat = [x for e in ends for x in e]
        cells.append(_mean_std(flat) if flat else "")
        for cand in ("teacher", "head", "random"):
            key = f"{learner}/{cand}"
            cells.append(_mean_std(entry["baselines"][key]["values"][metric]) if key in entry["baselines"] else "")
        diff = ""
        teacher_key = f"{learner}/teacher"
        if ends and teacher_key in entry["baselines"]:
            teacher = entry["baselines"][teacher_key]["values"][metric]
            iv = size_curve.over_runs(ends, [teacher] * len(ends))
            entry["summary_minus_teacher"] = iv.as_dict()
            diff = f"{iv.mean:+.4f} [{iv.lo:+.4f}, {iv.hi:+.4f}] (n={iv.n})"
            by_seed = interval([statistics.fmean(e[s] for e in ends) - t for s, t in enumerate(teacher)])
            entry["summary_minus_teacher_per_downstream_seed"] = by_seed.as_dict()
            per_seed = f"{by_seed.mean:+.4f} [{by_seed.lo:+.4f}, {by_seed.hi:+.4f}] (n={by_seed.n})"
        else:
            per_seed = ""
        runs = len(ends)
        lines.append(f"| {size} ({runs} distillation seed{'s' if runs != 1 else ''}) | " + " | ".join(cells)
                     + f" | {diff} | {per_seed} |")
    atomic_write(out.with_suffix(".md"), lambda f: f.write(("\n".join(lines) + "\n").encode()))


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4g} ± {std:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="a size-curve study's YAML (benchmarks/studies/)")
    parser.add_argument("--learner", required=True, help="gru, lstm, or YAML: {class_path, init_args}")
    parser.add_argument("--sizes", type=int, nargs="*", help="only these sizes (default: the study's exported ones)")
    parser.add_argument("--candidates", nargs="+", default=["teacher", "head", "random"],
                        help="baselines trained beside the summaries")
    parser.add_argument("--val-batches", type=int, default=None, help="validation batches per check (PTB: 20)")
    parser.add_argument("--selected", action="store_true",
                        help="read the summaries chosen on validation (*.selected.summary.pt), not the ends")
    args = parser.parse_args()
    study = yaml.safe_load(Path(args.study).read_text())
    spec = PRESETS.get(args.learner) or yaml.safe_load(args.learner)
    metric = study["metric"]
    name = spec["class_path"].rpartition(".")[2].lower() + "_" + spec.get("init_args", {}).get("cell", "")
    out = ROOT / "docs" / "results" / study["name"] / f"cross_{name.rstrip('_')}{'_selected' * args.selected}.json"
    state = json.loads(out.read_text()) if out.exists() else {"sizes": {}}
    state.update(study=study["name"], learner=spec, command="FARZI_DATA_DIR=../shared/data python "
                 "benchmarks/cross_arch.py " + " ".join(_quoted(a) for a in _argv()))

    def save() -> None:
        if "learner_name" in state:
            report(state, metric, out)  # also records each size's summary − teacher interval in the state
        text = json.dumps(state, indent=1)
        atomic_write(out, lambda f: f.write(text.encode()))

    for size in args.sizes or study.get("export_sizes", study["sizes"]):
        entry = state["sizes"].setdefault(str(size), {"baselines": {}, "summaries": {}, "seconds": {}})
        cli = size_curve.cli_for(study, size, 0, ROOT / "runs" / "study" / study["name"] / str(size) / "_cross")
        cli.datamodule.setup("fit")
        module = cli.model
        module.downstream.learners = [spec]
        if args.val_batches is not None:
            module.downstream.val_batches = args.val_batches
        state["learner_name"] = learner = list(module.downstream.learner_configs(module.learner))[-1]
        todo = [c for c in args.candidates if f"{learner}/{c}" not in entry["baselines"]]
        if todo:
            started = time.perf_counter()
            entry["baselines"].update(size_curve.scores(module.evaluate_downstream(
                "test", todo, data=cli.datamodule, learners=[learner])))
            entry["seconds"]["baselines"] = time.perf_counter() - started
            save()
        for seed, path in summary_files(study, size, args.selected).items():
            if str(seed) in entry["summaries"]:
                continue
            loaded = load_summary(path)
            if vars(loaded.feed) != vars(module.feed):
                raise SystemExit(f"{path}: its feed {vars(loaded.feed)} is not the study config's {vars(module.feed)}")
            module.summary = loaded
            started = time.perf_counter()
            entry["summaries"][str(seed)] = size_curve.scores(module.evaluate_downstream(
                "test", ["summary"], data=cli.datamodule, learners=[learner]))
            entry["seconds"][f"summary seed {seed}"] = time.perf_counter() - started
            entry.setdefault("files", {})[str(seed)] = str(path.relative_to(ROOT))
            save()
        print(f"[{size}] {json.dumps(entry.get('summary_minus_teacher'))}", flush=True)
    save()


def _argv() -> list[str]:
    return [a if not a.startswith(str(ROOT)) else str(Path(a).relative_to(ROOT)) for a in sys.argv[1:]]


def _quoted(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " {}:,") else arg


if __name__ == "__main__":
    main()
