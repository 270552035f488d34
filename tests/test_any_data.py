"""Data nobody tuned to, from a config alone: an Amazon-style ratings CSV (string ids, duplicates, short users)
and a novel shipped as ``novel.<split>.txt`` with a large raw vocabulary; pretrain, distil and test each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hand_metrics import popularity_hr, unigram_ppl

from cli_utils import ROOT, SHORT_DOWNSTREAM, run, working_in
from small_data import write_corpus, write_interactions

RATINGS = """\
data:
  init_args:
    data_dir: {root}
    name: amazon
    file: ratings.csv
    delimiter: ","
    header: true
    user_col: 1
    item_col: 0
    timestamp_col: 3
    seq_len: 10
    titles:
      file: titles.csv
      delimiter: ","
      header: true
model:
  init_args:
    learner:
      init_args:
        max_len: 10
"""
NOVEL = """\
data:
  init_args:
    data_dir: {root}
    name: novel
    seq_len: 12
model:
  init_args:
    learner:
      init_args:
        max_len: 12
"""


def distil_from_configs(tmp_path: Path, kind: str) -> tuple:
    data = tmp_path / "data"
    if kind == "ratings":
        write_interactions(data)
        pretrain, distil, text = ROOT / "configs/ml100k_pretrain.yaml", ROOT / "configs/ml100k.yaml", RATINGS
        summary = "--model.init_args.summary.init_args.seq_len=11"
    else:
        write_corpus(data)
        pretrain, distil, text = ROOT / "configs/ptb_pretrain.yaml", ROOT / "configs/ptb.yaml", NOVEL
        summary = "--model.init_args.summary.init_args.seq_len=13"
    mine = tmp_path / f"{kind}.yaml"
    mine.write_text(text.format(root=data))
    with working_in(tmp_path, tmp_path / "nowhere"):  # nothing from $FARZI_DATA_DIR: the config says it all
        run("fit", "--config", str(mine), config=pretrain)
        fitted = run("fit", "--config", str(mine), summary, "--trainer.max_steps=2", *SHORT_DOWNSTREAM,
                     config=distil)
        ckpt = Path(fitted.trainer.log_dir) / "checkpoints" / "last.ckpt"
        tested = run("test", "--config", str(mine), summary, f"--ckpt_path={ckpt}", *SHORT_DOWNSTREAM,
                     config=distil)
    return fitted, tested


def test_ratings_csv_with_string_ids_and_duplicates(tmp_path):
    fitted, tested = distil_from_configs(tmp_path, "ratings")
    data = fitted.datamodule
    assert data.split.report["exact_duplicates"] == 1 and data.split.report["repeated_pairs"] == 1
    assert data.split.report["short_users"] == 2 and len(data.split.user_ids) == 40
    lines = (tmp_path / fitted.trainer.log_dir / "checkpoints" / "summary.txt").read_text().split()
    assert lines and all(token.startswith("B0") and token.endswith("X") for token in lines)  # original ids
    # The popularity floor, ranked by hand from the split (tests/hand_metrics.py).
    reported = float(tested.trainer.callback_metrics["downstream/sasrec/popularity/hr@10"])
    assert reported == pytest.approx(popularity_hr(data.split), abs=1e-6)
    assert 0.0 <= float(tested.trainer.callback_metrics["downstream/sasrec/summary/hr@10"]) <= 1.0


def test_novel_with_name_dot_split_files_and_a_large_vocabulary(tmp_path):
    fitted, tested = distil_from_configs(tmp_path, "novel")
    assert fitted.datamodule.vocab_size > 1000 and "<unk>" in fitted.datamodule.vocabulary()  # unseen → <unk>
    rows = fitted.model.summary.decode()
    assert rows.shape == (10, 13) and torch.all(rows < fitted.datamodule.vocab_size)
    ppl = float(tested.trainer.callback_metrics["downstream/transformerlm/summary/ppl"])
    assert 1.0 < ppl < float("inf")
    # The unigram floor by hand, from the training words (tests/hand_metrics.py).
    reported = float(tested.trainer.callback_metrics["downstream/transformerlm/unigram/ppl"])
    assert reported == pytest.approx(unigram_ppl(fitted.datamodule), rel=1e-4)


@pytest.fixture(autouse=True)
def _no_real_data(monkeypatch):
    monkeypatch.delenv("FARZI_DATA_DIR", raising=False)


def test_ckpt_path_last_resumes_the_run_and_the_command_line_wins(tmp_path):
    data = write_interactions(tmp_path / "data")
    mine = tmp_path / "ratings.yaml"
    mine.write_text(RATINGS.format(root=data))
    distil = ROOT / "configs/ml100k.yaml"
    common = ["--config", str(mine), "--model.init_args.summary.init_args.seq_len=11", *SHORT_DOWNSTREAM,
              "--trainer.max_epochs=3"]
    with working_in(tmp_path, tmp_path / "nowhere"):
        run("fit", "--config", str(mine), config=ROOT / "configs/ml100k_pretrain.yaml")
        straight = run("fit", *common, "--trainer.max_steps=4", config=distil)
        first = run("fit", *common, "--trainer.max_steps=2", config=distil)
        resumed = run("fit", *common, "--trainer.max_steps=4", "--ckpt_path=last", config=distil)
        assert resumed.trainer.global_step == 4  # found the interrupted run, and logs on in its folder
        assert Path(resumed.trainer.log_dir).resolve() == Path(first.trainer.log_dir).resolve()
        torch.testing.assert_close(resumed.model.summary.z, straight.model.summary.z, rtol=0, atol=0)
        ckpt = Path(resumed.trainer.log_dir) / "checkpoints" / "last.ckpt"
        tested = run("test", *common, f"--ckpt_path={ckpt}", "--model.init_args.inner_batch_size=3", config=distil)
    assert tested.model.hparams.inner_batch_size == 3  # the command line's, not the checkpoint's 5
    torch.testing.assert_close(tested.model.summary.z, resumed.model.summary.z, rtol=0, atol=0)


def test_a_summary_longer_or_larger_than_the_data_is_warned_about(tmp_path):
    data = write_interactions(tmp_path / "data")
    mine = tmp_path / "ratings.yaml"
    mine.write_text(RATINGS.format(root=data))
    with working_in(tmp_path, tmp_path / "nowhere"):
        long = ["--data.init_args.seq_len=30", "--model.init_args.learner.init_args.max_len=30"]
        run("fit", "--config", str(mine), *long, config=ROOT / "configs/ml100k_pretrain.yaml")
        with pytest.warns(UserWarning) as caught:
            fitted = run("fit", "--config", str(mine), "--tiny=false", "--data.init_args.seq_len=30",
                         "--model.init_args.teacher=runs/tiny/banks/ml100k_sasrec",  # the tiny pretrain's
                         "--model.init_args.learner.init_args.max_len=30",
                         "--model.init_args.summary.init_args.seq_len=31",
                         "--model.init_args.summary.init_args.num_sequences=50",
                         "--model.init_args.inner_optimizer.init_args.steps=2",
                         "--model.init_args.start.init_args.max_steps=2", "--trainer.max_steps=1",
                         "--model.init_args.downstream.init_args.candidates=[summary]", *SHORT_DOWNSTREAM,
                         config=ROOT / "configs/ml100k.yaml")
    messages = " ".join(str(w.message) for w in caught)
    assert "num_sequences=50: the data has only 40 training sequences" in messages
    assert "seq_len=31 is longer than most real sequences: 0 of 40 have 31 tokens (median 14)" in messages
    assert "data.init_args.seq_len=30: only 0 of 40 users have 31 training events (median 14)" in messages
    assert (fitted.model.summary.decode() != 0).all()  # and it never started from padding
