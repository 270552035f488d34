"""Bad input and damaged files through the `farzi` command as a person types it: every case ends with one
line naming the key, file or line (exit status 2, no traceback), and nothing on disk is lost.

Offline: the data, banks and checkpoints are written here (small_data.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from farzi_lightning.cli import main

from cli_utils import ROOT, TINY
from small_data import write_corpus, write_interactions

PRETRAIN, DISTIL = ROOT / "configs" / "ml100k_pretrain.yaml", ROOT / "configs" / "ml100k.yaml"
PTB_PRETRAIN = ROOT / "configs" / "ptb_pretrain.yaml"
RATINGS = ["--data.init_args.file=ratings.csv", "--data.init_args.delimiter=,", "--data.init_args.header=true",
           "--data.init_args.user_col=1", "--data.init_args.item_col=0", "--data.init_args.seq_len=10",
           "--data.init_args.download=false", "--data.init_args.verify=false",
           "--model.init_args.learner.init_args.max_len=10"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data, a tiny pretrain (bank + checkpoint) and a few damaged files, in a folder used as the cwd."""
    root = tmp_path_factory.mktemp("bad")
    data = write_interactions(root / "ratings")
    corpus = write_corpus(root / "novel", vocab=300, lines=(60, 10, 10))
    patch = pytest.MonkeyPatch()
    patch.chdir(root)
    patch.delenv("FARZI_DATA_DIR", raising=False)
    try:
        main(["fit", "--config", str(PRETRAIN), "--config", str(TINY), f"--data.init_args.data_dir={data}",
              *RATINGS])
    finally:
        patch.undo()
    (root / "ratings_short.csv").write_text("asin,reviewer,rating,time\nB1,A1,5,1\nB2,A1\n")
    (root / "ratings_time.csv").write_text("asin,reviewer,rating,time\nB1,A1,5,yesterday\n")
    (root / "ratings_latin.csv").write_bytes(b"asin,reviewer,rating,time\nB1,A1,5,1\nB\xe9,A1,5,2\n")
    for name in ("ratings_short.csv", "ratings_time.csv", "ratings_latin.csv"):
        shutil.copy(root / name, data / name)
    bad_text = root / "bad_text"
    shutil.copytree(corpus, bad_text)
    (bad_text / "novel.valid.txt").write_bytes(b"w1 w2\nw3 \xff w4\n")
    empty_text = root / "empty_text"
    shutil.copytree(corpus, empty_text)
    (empty_text / "novel.test.txt").write_text("\n\n")
    no_splits = root / "no_splits"
    no_splits.mkdir()
    (no_splits / "notes.txt").write_text("x\n")
    ckpt = next(root.glob("**/lightning_logs/version_*/checkpoints/last.ckpt"))
    (root / "truncated.ckpt").write_bytes(ckpt.read_bytes()[:2000])
    (root / "garbage.ckpt").write_text("not a checkpoint\n")
    crafted = torch.load(ckpt, weights_only=True)
    crafted["hyper_parameters"]["optimizer"]["class_path"] = "subprocess.Popen"
    torch.save(crafted, root / "crafted.ckpt")
    (root / "ratings_nan.csv").write_text("asin,reviewer,rating,time\nB1,A1,5,1\nB2,A1,5,nan\n")
    shutil.copy(root / "ratings_nan.csv", data / "ratings_nan.csv")
    (root / "broken.yaml").write_text("trainer:\n  max_steps: [1\n")
    one_word = root / "one_word"
    shutil.copytree(corpus, one_word)
    (one_word / "novel.train.txt").write_text("w1\n")
    from farzi_lightning.export import save_summary, summary_payload
    from farzi_lightning.summaries import TokenSummary

    summary = TokenSummary(vocab_size=7, num_sequences=2, seq_len=3)
    save_summary(root / "a.summary.pt", summary_payload(summary, [str(i) for i in range(7)]))
    other = root / "other_bank"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"vocab_size": 5, "fingerprint": "x", "entries": []}))
    cut = root / "cut_bank"
    shutil.copytree(root / "runs" / "tiny" / "banks" / "ml100k_sasrec", cut)
    victim = sorted(cut.glob("seed-0/step-*.pt"))[-1]
    victim.write_bytes(victim.read_bytes()[:500])
    return root


def distil(world: Path, *args: str) -> list[str]:
    return ["fit", "--config", str(DISTIL), "--config", str(TINY), f"--data.init_args.data_dir={world}/ratings",
            *RATINGS, "--data.init_args.titles=null", "--model.init_args.summary.init_args.seq_len=11",
            f"--model.init_args.teacher={world}/runs/tiny/banks/ml100k_sasrec", *args]


def pretrain(world: Path, *args: str, data: str = "ratings") -> list[str]:
    return ["fit", "--config", str(PRETRAIN), "--config", str(TINY), f"--data.init_args.data_dir={world}/{data}",
            *RATINGS, *args]


def text(world: Path, folder: str, *args: str) -> list[str]:
    return ["fit", "--config", str(PTB_PRETRAIN), "--config", str(TINY), f"--data.init_args.data_dir={world}/{folder}",
            "--data.init_args.name=novel", *args]


def last_ckpt(world: Path) -> str:
    return str(next(world.glob("**/lightning_logs/version_*/checkpoints/last.ckpt")))


# (id, argv builder, what the last line says)
CASES = [
    # -- config values, checked at construction, named by key
    ("seq_len 0", lambda w: pretrain(w, "--data.init_args.seq_len=0"),
     "error: data.init_args.seq_len must be an integer >= 1, got 0"),
    ("batch_size 0", lambda w: pretrain(w, "--data.init_args.batch_size=0"),
     "error: data.init_args.batch_size must be an integer >= 1, got 0"),
    ("min_interactions 2", lambda w: pretrain(w, "--data.init_args.min_interactions=2"),
     "error: data.init_args.min_interactions must be an integer >= 3, got 2"),
    ("same column twice", lambda w: pretrain(w, "--data.init_args.user_col=0"),
     "must be three different columns"),
    ("max_vocab 0", lambda w: text(w, "novel", "--data.init_args.max_vocab=0"),
     "error: data.init_args.max_vocab must be an integer >= 3, got 0"),
    ("max_vocab 1", lambda w: text(w, "novel", "--data.init_args.max_vocab=1"),
     "error: data.init_args.max_vocab must be an integer >= 3, got 1"),
    ("max_vocab negative", lambda w: text(w, "novel", "--data.init_args.max_vocab=-5"),
     "error: data.init_args.max_vocab must be an integer >= 3, got -5"),
    ("text seq_len negative", lambda w: text(w, "novel", "--data.init_args.seq_len=-3"),
     "error: data.init_args.seq_len must be an integer >= 2, got -3"),
    ("text batch_size 0", lambda w: text(w, "novel", "--data.init_args.batch_size=0"),
     "error: data.init_args.batch_size must be an integer >= 1, got 0"),
    ("rows longer than the learner reads", lambda w: pretrain(w, "--data.init_args.seq_len=20"),
     "error: data.init_args.seq_len=20 is longer than model.init_args.learner.init_args.max_len=10"),
    ("a type error", lambda w: pretrain(w, "--trainer.max_steps=abc"),
     "error: trainer.max_steps: Expected a <class 'int'>. Got value: abc"),
    ("unknown choice", lambda w: distil(w, "--model.init_args.input_mode=bogus"),
     "error: model.init_args.input_mode: Expected a typing.Literal['soft', 'hard', 'straight_through']"),
    ("summary num_sequences 0", lambda w: distil(w, "--model.init_args.summary.init_args.num_sequences=0"),
     "error: model.init_args.summary.init_args.num_sequences must be >= 1, got 0"),
    ("summary seq_len 1", lambda w: distil(w, "--model.init_args.summary.init_args.seq_len=1"),
     "error: model.init_args.summary.init_args.seq_len must be >= 2, got 1"),
    ("summary longer than the learner reads", lambda w: distil(w, "--model.init_args.summary.init_args.seq_len=30"),
     "needs the learner to read 29 tokens, but model.init_args.learner.init_args.max_len=10"),
    ("T 0", lambda w: distil(w, "--model.init_args.inner_optimizer.init_args.steps=0"),
     "error: model.init_args.inner_optimizer.init_args.steps must be an integer >= 1, got 0"),
    ("inner lr negative", lambda w: distil(w, "--model.init_args.inner_optimizer.init_args.lr=-1"),
     "error: model.init_args.inner_optimizer.init_args.lr must be a positive finite number, got -1.0"),
    ("betas out of range", lambda w: distil(w, "--model.init_args.inner_optimizer.init_args.betas=[0.9,1.5]"),
     "error: model.init_args.inner_optimizer.init_args.betas must both lie in (0, 1)"),
    ("outer lr negative", lambda w: distil(w, "--model.init_args.optimizer.init_args.lr=-0.1"),
     "error: model.init_args.optimizer: Invalid learning rate: -0.1"),
    ("clip negative", lambda w: distil(w, "--model.init_args.gradient_clip_val=-1"),
     "error: model.init_args.gradient_clip_val must be positive or null, got -1.0"),
    ("relative clip zero", lambda w: distil(w, "--model.init_args.gradient_clip_relative=0"),
     "error: model.init_args.gradient_clip_relative must be positive or null, got 0.0"),
    ("outer batch negative", lambda w: distil(w, "--model.init_args.outer_batch_size=-2"),
     "error: model.init_args.outer_batch_size must be an integer >= 0, got -2"),
    ("summary bits 4", lambda w: distil(w, "--model.init_args.summary_bits=4"),
     "error: model.init_args.summary_bits must be 8 or 16, got 4"),
    ("outer loss not a loss", lambda w: distil(w, "--model.init_args.outer_loss=farzi_lightning.starts.RandomStart"),
     "error: model.init_args.outer_loss"),
    ("meta_batch_size 0", lambda w: distil(w, "--model.init_args.meta_batch_size=0"),
     "error: model.init_args.meta_batch_size must be an integer >= 1, got 0"),
    ("temperature 0", lambda w: distil(w, "--model.init_args.input_temperature=0"),
     "error: model.init_args.input_temperature must be positive, got 0.0"),
    ("downstream seeds 0", lambda w: distil(w, "--model.init_args.downstream.init_args.seeds=0"),
     "error: model.init_args.downstream.init_args.seeds must be an integer >= 1, got 0"),
    ("unknown downstream candidate", lambda w: distil(w, "--model.init_args.downstream.init_args.candidates=[bogus]"),
     "error: model.init_args.downstream: candidates: unknown 'bogus'"),
    ("heads do not divide width", lambda w: distil(w, "--model.init_args.learner.init_args.n_heads=3"),
     "error: model.init_args.learner: d_model=16 must be divisible by n_heads=3"),
    ("warm start negative", lambda w: distil(w, "--model.init_args.start.init_args.max_steps=-1"),
     "error: model.init_args.start.init_args.max_steps must be an integer >= 0, got -1"),
    ("fsdp", lambda w: distil(w, "--trainer.strategy=fsdp"), "Supported: auto, single_device, ddp, ddp_spawn"),
    ("16-mixed", lambda w: distil(w, "--trainer.precision=16-mixed"),
     "its gradient scaler would unscale meta-gradients that were never scaled"),
    # -- data files: named with file and line
    ("missing folder", lambda w: pretrain(w, data="nowhere"), "ratings.csv not found in"),
    ("short row", lambda w: pretrain(w, "--data.init_args.file=ratings_short.csv"),
     "ratings_short.csv:3: expected at least 4 columns"),
    ("bad timestamp", lambda w: pretrain(w, "--data.init_args.file=ratings_time.csv"),
     "ratings_time.csv:2: timestamp 'yesterday' in column 3 is neither a number nor an ISO-8601 date"),
    ("non-UTF-8 interactions", lambda w: pretrain(w, "--data.init_args.file=ratings_latin.csv"),
     "ratings_latin.csv:3: byte 0xe9 at column 2 is not valid utf-8 text; set data.init_args.encoding"),
    ("no user long enough", lambda w: pretrain(w, "--data.init_args.min_interactions=100"),
     "no user has at least min_interactions=100 interactions"),
    ("titles file missing", lambda w: pretrain(w, "--data.init_args.titles.file=gone.csv"),
     "error: data.init_args.titles.file: "),
    ("non-UTF-8 text", lambda w: text(w, "bad_text"), "novel.valid.txt:2: byte 0xff at column 4 is not valid utf-8"),
    ("empty split", lambda w: text(w, "empty_text"), "novel.test.txt: the file is empty"),
    ("no split files", lambda w: text(w, "no_splits"),
     "expected train, valid and test files (<split>.txt or <name>.<split>.txt, or data.init_args.files), "
     "found notes.txt"),
    # -- banks
    ("teacher bank of other data", lambda w: distil(w, f"--model.init_args.teacher={w}/other_bank"),
     "error: model.init_args.teacher: "),
    ("teacher reads shorter rows", lambda w: distil(w, "--model.init_args.learner.init_args.max_len=20",
                                                    "--model.init_args.summary.init_args.seq_len=15"),
     "model.init_args.teacher: the full-data model reads at most 10 tokens, but "
     "model.init_args.summary.init_args.seq_len=15 needs 14"),
    ("teacher not a bank", lambda w: distil(w, f"--model.init_args.teacher={w}/ratings"), "not a trajectory bank"),
    ("truncated bank file", lambda w: distil(w, f"--model.init_args.teacher={w}/cut_bank"),
     "missing or truncated bank checkpoint"),
    # -- checkpoints
    ("checkpoint missing", lambda w: distil(w, f"--ckpt_path={w}/gone.ckpt"), "error: --ckpt_path: "),
    ("checkpoint truncated", lambda w: distil(w, f"--ckpt_path={w}/truncated.ckpt"),
     "truncated.ckpt is not a complete checkpoint (truncated, or not written by torch.save)"),
    ("checkpoint garbage", lambda w: distil(w, f"--ckpt_path={w}/garbage.ckpt"),
     "garbage.ckpt is not a complete checkpoint"),
    ("checkpoint of another module", lambda w: distil(w, f"--ckpt_path={last_ckpt(w)}"),
     "is a checkpoint of farzi_lightning.LearnerModule, but the config's model is "
     "farzi_lightning.FarziLightningModule"),
    ("crafted class path", lambda w: distil(w, f"--ckpt_path={w}/crafted.ckpt"),
     "crafted.ckpt: optimizer.class_path names 'subprocess.Popen', a class of another kind"),
    ("nothing to resume", lambda w: distil(w, "--ckpt_path=last", f"--trainer.default_root_dir={w}/fresh"),
     "--ckpt_path last: no last.ckpt under"),
    ("checkpoint is a summary.pt", lambda w: distil(w, f"--ckpt_path={w}/a.summary.pt"),
     "a.summary.pt is a summary.pt (retrain on it with farzi_lightning.load_summary"),
    ("checkpoint is a bank step file", lambda w: distil(w, f"--ckpt_path={next(w.glob('cut_bank/seed-0/step-*.pt'))}"),
     "is a learner's weights (a trajectory bank's step file"),
    ("checkpoint is a folder", lambda w: distil(w, f"--ckpt_path={w}/runs"),
     "runs is a folder; name a checkpoint file"),
    ("checkpoint of other data", lambda w: ["test", *pretrain(w, "--data.init_args.dedup=false")[1:],
                                            f"--ckpt_path={last_ckpt(w)}"],
     "the checkpoint was trained on data with fingerprint"),
    ("checkpoint of another model size",
     lambda w: ["test", *pretrain(w, "--model.init_args.learner.init_args.d_model=32")[1:],
                f"--ckpt_path={last_ckpt(w)}"],
     "the checkpoint's learner.embed.weight has shape (31, 16), the configured model's (31, 32)"),
    ("test without a checkpoint", lambda w: ["test", *pretrain(w)[1:]],
     "--ckpt_path: farzi test needs a checkpoint (a .ckpt file, or last"),
    ("validate a distillation without a checkpoint", lambda w: ["validate", *distil(w)[1:]],
     "it would report the initial summary (before any outer step); --ckpt_path init does that on purpose"),
    # -- messages that say what to fix
    ("YAML syntax error", lambda w: pretrain(w, "--config", f"{w}/broken.yaml"),
     "broken.yaml:3:1: invalid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence at "
     "line 2, column 14)"),
    ("nested key typo", lambda w: distil(w, "--model.init_args.inner_optimizer.init_args.stepz=3"),
     "error: model.init_args.inner_optimizer.init_args.stepz: not an argument of farzi_lightning.inner.ReverseAdam; "
     "did you mean 'steps'?"),
    ("a logger argument of the wrong type",
     lambda w: pretrain(w, "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                        "--trainer.logger.flush_logs_every_n_steps=abc"),
     "error: trainer.logger.init_args.flush_logs_every_n_steps: Expected a <class 'int'>. Got value: abc"),
    ("a callback value Lightning refuses", lambda w: pretrain(w, "--trainer.callbacks+=ModelCheckpoint",
                                                              "--trainer.callbacks.mode=bogus"),
     "error: trainer.callbacks[2]: `mode` can be min, max but got bogus"),
    ("max_steps negative", lambda w: pretrain(w, "--trainer.max_steps=-3"),
     "error: trainer.max_steps must be -1 (no limit) or an integer >= 0, got -3"),
    # -- data that would have passed silently
    ("timestamp not finite", lambda w: pretrain(w, "--data.init_args.file=ratings_nan.csv"),
     "ratings_nan.csv:3: timestamp 'nan' in column 3 is not a finite number"),
    ("one-word training split", lambda w: text(w, "one_word"),
     "novel.train.txt: the train split has 2 token(s) (end-of-line markers included); at least"),
]


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv, expected", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_one_line_naming_the_cause_and_nothing_lost(world, argv, expected, capsys, monkeypatch, request):
    monkeypatch.chdir(world)
    monkeypatch.delenv("FARZI_DATA_DIR", raising=False)
    monkeypatch.delenv("FARZI_TRACEBACK", raising=False)
    before = digest(world)
    with pytest.raises(SystemExit) as exit_:
        main(argv(world))
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert exit_.value.code == 2, err[-2000:]
    assert expected in last, last
    assert last.startswith("error: ") and "Traceback" not in err
    assert len(last) < 400
    after = digest(world)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing written over or removed
    if os.environ.get("FARZI_CASE_TABLE"):  # the catalogue for the docs: case, and what the person sees
        with open(os.environ["FARZI_CASE_TABLE"], "a") as f:
            f.write(f"| {request.node.callspec.id} | `{last.replace(str(world), '<dir>')}` |\n")


def test_docs_errors_lists_every_case_once():
    """docs/errors.md is the catalogue of these cases (regenerated as its header says): none missing, none stale."""
    rows = [line.split("|")[1].strip() for line in (ROOT / "docs" / "errors.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| case ")]
    names = [c[0] for c in CASES]
    assert len(set(names)) == len(names)
    documented = [r for r in rows if r in set(names)]
    assert sorted(documented) == sorted(names), sorted(set(names) - set(documented))


def test_load_from_checkpoint_refuses_damaged_and_foreign_files(world):
    from farzi_lightning import FarziLightningModule, LearnerModule

    with pytest.raises(ValueError, match=r"checkpoint_path: .*crafted.ckpt: optimizer.class_path names "
                                         r"'subprocess.Popen', a class of another kind"):
        LearnerModule.load_from_checkpoint(world / "crafted.ckpt")
    with pytest.raises(ValueError, match=r"checkpoint_path: .*truncated.ckpt is not a complete checkpoint"):
        FarziLightningModule.load_from_checkpoint(str(world / "truncated.ckpt"))


def test_a_full_disk_is_one_line_naming_the_file(monkeypatch, capsys):
    import errno

    import farzi_lightning.cli as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/checkpoints/last.ckpt")

    monkeypatch.setattr(cli, "build", full)
    monkeypatch.delenv("FARZI_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fit"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.count("\n") == 0
    assert err.startswith("error: runs/x/checkpoints/last.ckpt: No space left on device; free space")
