"""Datamodules: leave-last-out split, text windows, data location and every malformed-input error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from farzi_lightning.data import IGNORE_INDEX, InteractionDataModule, TextDataModule, Vocabulary
from farzi_lightning.data.interactions import leave_last_out, read_interactions
from farzi_lightning.data.text import StreamWindows

# user, item, rating, timestamp. User 7: a tie at t=5 (file order decides: 30 then 31); user 9: too short.
HAND_MADE = """7\t10\t5\t1
8\t20\t3\t4
7\t31\t4\t9
7\t30\t4\t5
7\t31\t1\t5
8\t21\t2\t2
9\t10\t1\t1
8\t22\t5\t3
9\t11\t1\t2
8\t10\t4\t1
"""


def write(tmp_path: Path, text: str | bytes, name: str = "log.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_leave_last_out_with_ties_and_short_users(tmp_path):
    rows = read_interactions(write(tmp_path, HAND_MADE))
    split = leave_last_out(rows, min_interactions=3, dedup=False)
    assert split.user_ids == ["7", "8"]  # user 9 has 2 interactions: dropped
    assert split.item_ids == ["10", "20", "21", "22", "30", "31"]  # remapped to 1..6 in id order
    original = lambda ids: [split.item_ids[i - 1] for i in ids]  # noqa: E731
    # user 7 by (timestamp, file order): 10@1, 30@5 (line 4), 31@5 (line 5), 31@9
    assert original(split.train[0]) == ["10", "30"] and original([split.valid[0], split.test[0]]) == ["31", "31"]
    # user 8: 10@1, 21@2, 22@3, 20@4
    assert original(split.train[1]) == ["10", "21"] and original([split.valid[1], split.test[1]]) == ["22", "20"]


def test_string_ids_duplicates_and_short_users_are_mapped_and_counted(tmp_path):
    # Amazon-style: ASIN,reviewerID,rating,unix_time with a header; string ids of any kind.
    text = ("asin,reviewer,rating,time\n"
            "B00X,A2Z,5,100\nB00Y,A2Z,4,101\nB00X,A2Z,5,100\n"  # an exact duplicate row
            "B01Q,A2Z,3,102\nB00X,A2Z,2,103\n"  # a repeated (user, item) pair: would be both valid and test
            "B00Z,A2Z,1,104\nB00Y,A9,5,1\nB00Z,A9,5,2\n"  # A9: 2 events, dropped
            "B00Z,10,1,1\nB00Y,10,1,2\nB00X,10,1,3\n")
    rows = read_interactions(write(tmp_path, text, "ratings.csv"), delimiter=",", header=True, user_col=1,
                             item_col=0, timestamp_col=3)
    split = leave_last_out(rows, 3, "ratings.csv")
    assert split.user_ids == ["10", "A2Z"]  # integers first, then strings
    assert split.item_ids == ["B00X", "B00Y", "B00Z", "B01Q"]
    names = lambda ids: [split.item_ids[i - 1] for i in ids]  # noqa: E731
    assert names(split.train[1]) == ["B00X", "B00Y"] and names([split.valid[1], split.test[1]]) == ["B01Q", "B00Z"]
    assert split.report == {"rows": 11, "exact_duplicates": 1, "repeated_pairs": 1, "short_users": 1,
                            "short_events": 2, "users": 2, "events": 7, "items": 4}
    kept = leave_last_out(rows, 3, dedup=False)
    assert names([kept.valid[1], kept.test[1]]) == ["B00X", "B00Z"]


def test_other_column_orders_csv_with_header_and_iso_dates(tmp_path):
    text = "timestamp,item,user\n2024-01-03,5,1\n2024-01-01,6,1\n2024-01-02,7,1\n"
    rows = read_interactions(write(tmp_path, text, "log.csv"), delimiter=",", header=True, user_col=2,
                             item_col=1, timestamp_col=0)
    split = leave_last_out(rows)
    assert [split.item_ids[i - 1] for i in split.train[0]] == ["6"]
    assert split.item_ids[split.valid[0] - 1] == "7" and split.item_ids[split.test[0] - 1] == "5"


@pytest.mark.parametrize("text, kwargs, match", [
    ("1\t2\t3\t4\n1\t2\n", {}, r"log.tsv:2: expected at least 4 columns"),
    ("1\t\t3\t4\n", {}, r"log.tsv:1: the item id in column 1 is empty"),
    ("1\t2\t3\t4\n\t7\t3\t4\n", {}, r"log.tsv:2: the user id in column 0 is empty"),
    (b"1\t2\t3\t4\n1\t\xe9t\xe9\t3\t4\n", {}, r"log.tsv:2: byte 0xe9 at column 3 is not valid utf-8 text; set "
                                                  r"data.init_args.encoding"),
    ("1\t7\t3\tyesterday\n", {}, r"log.tsv:1: timestamp 'yesterday' in column 3"),
    ("", {}, r"log.tsv: no interactions found \(the file is empty"),
    ("user\titem\tr\tt\n", {"header": True}, r"but for its header"),
])
def test_malformed_interactions_name_file_and_line(tmp_path, text, kwargs, match):
    with pytest.raises(ValueError, match=match):
        read_interactions(write(tmp_path, text), **kwargs)


def test_split_with_no_users(tmp_path):
    rows = read_interactions(write(tmp_path, "1\t2\t3\t4\n1\t3\t3\t5\n"))
    with pytest.raises(ValueError, match=r"log.tsv: no user has at least min_interactions=3"):
        leave_last_out(rows, 3, tmp_path / "log.tsv")


def test_interaction_datamodule_batches(tmp_path):
    write(tmp_path, HAND_MADE, "u.data")
    dm = InteractionDataModule(data_dir=str(tmp_path), seq_len=4, batch_size=8, download=False, verify=False,
                               dedup=False)
    assert dm.vocab_size == 7 and dm.num_items == 6
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 4) and y.shape == (2, 4)
    # user 7's training items [10, 30] → ids [1, 5]: input (0, 0, 0, 1), next items (-, -, -, 5)
    row = [r for r in range(2) if x[r, -1] == 1 and y[r, -1] == 5]
    assert row and y[row[0], :3].eq(IGNORE_INDEX).all()
    history, target, seen = next(iter(dm.test_dataloader()))
    assert history[0].tolist() == [0, 1, 5, 6] and int(target[0]) == 6  # test history = train + valid
    assert seen[0].nonzero().flatten().tolist() == [1, 5, 6]


def test_missing_data_names_path_and_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("FARZI_DATA_DIR", str(tmp_path))
    interactions = InteractionDataModule(download=False)  # the constructor touches no file (DDP ranks build it)
    text = TextDataModule(data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/ml-100k.*FARZI_DATA_DIR"):
        interactions.prepare_data()
    with pytest.raises(FileNotFoundError, match=r"ptb.train.txt.*not found in .*data_dir"):
        _ = text.vocab_size  # read early (the CLI sizes the learner from it): the same error


def test_file_work_happens_in_prepare_data_and_setup(tmp_path, monkeypatch):
    write(tmp_path, HAND_MADE, "u.data")
    calls = []
    import farzi_lightning.data.base as base
    import farzi_lightning.data.interactions as module

    real_resolve, real_read = base.resolve, module.read_interactions
    monkeypatch.setattr(base, "resolve",
                        lambda *a, **k: calls.append(("resolve", k["download"])) or real_resolve(*a, **k))
    monkeypatch.setattr(module, "read_interactions", lambda *a, **k: calls.append("parse") or real_read(*a, **k))
    dm = InteractionDataModule(data_dir=str(tmp_path), seq_len=4, download=True, verify=False)
    assert calls == []
    dm.prepare_data()
    assert calls == [("resolve", True)]
    dm.setup("fit")
    dm.setup("test")
    assert calls == [("resolve", True), "parse"] and dm.vocab_size == 7  # parsed once, not found again
    # A process other than local rank 0 that reads the data before setup never downloads.
    monkeypatch.setenv("LOCAL_RANK", "1")
    other = InteractionDataModule(data_dir=str(tmp_path), seq_len=4, download=True, verify=False)
    assert other.fingerprint == dm.fingerprint
    assert calls[2:] == [("resolve", False), "parse"]


def test_vocabulary_and_windows_cover_every_token():
    lines = [["a", "b", "a"], ["c", "a"]]
    vocab = Vocabulary(lines)
    assert vocab.itos == ["<eos>", "a", "b", "c"]
    stream = vocab.encode(lines, Path("train.txt"))
    assert vocab.decode(stream) == ["a", "b", "a", "<eos>", "c", "a", "<eos>"]
    windows = StreamWindows(stream, seq_len=3)
    targets = torch.cat([y for _, y in windows])
    assert targets[targets != IGNORE_INDEX].tolist() == stream[1:].tolist()  # each next token exactly once
    capped = Vocabulary(lines, max_vocab=3)
    assert capped.itos == ["<eos>", "<unk>", "a"]
    assert capped.decode(capped.encode([["c"]], Path("x"))) == ["<unk>", "<eos>"]
    with pytest.raises(ValueError, match=r"valid.txt:2: word 'zzz' is not in the training vocabulary"):
        vocab.encode([["a"], ["zzz"]], Path("valid.txt"))


def test_text_errors(tmp_path):
    for split in ("train", "valid", "test"):
        write(tmp_path, "a b\n", f"{split}.txt")
    (tmp_path / "valid.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"valid.txt: the file is empty"):
        TextDataModule(data_dir=str(tmp_path), name="corpus", download=False).setup("fit")
    (tmp_path / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="expected train, valid and test files"):
        TextDataModule(data_dir=str(tmp_path), name="corpus", download=False).setup("fit")


def test_any_corpus_naming_explicit_files_and_what_was_found(tmp_path):
    for split in ("train", "valid", "test"):
        write(tmp_path, "the cat sat\n", f"novel.{split}.txt")
    write(tmp_path, "x\n", "notes.txt")
    dm = TextDataModule(data_dir=str(tmp_path), name="novel", seq_len=2, download=False)
    assert dm.vocabulary() == ["<eos>", "cat", "sat", "the"]
    (tmp_path / "novel.test.txt").rename(tmp_path / "novel.heldout.txt")
    with pytest.raises(FileNotFoundError, match=r"found notes.txt, novel.heldout.txt, novel.train.txt, novel.valid"):
        TextDataModule(data_dir=str(tmp_path), name="novel", seq_len=2, download=False).setup()
    files = {"train": "novel.train.txt", "valid": "novel.valid.txt", "test": "novel.heldout.txt"}
    assert TextDataModule(data_dir=str(tmp_path), name="novel", files=files, seq_len=2, download=False).vocab_size == 4
    with pytest.raises(FileNotFoundError, match=r"data.init_args.files.test: .*gone.txt not found"):
        TextDataModule(data_dir=str(tmp_path), files={**files, "test": "gone.txt"}, seq_len=2, download=False).setup()
    write(tmp_path, "a\n", "other.train.txt")
    with pytest.raises(ValueError, match=r"several train files \(novel.train.txt, other.train.txt\)"):
        TextDataModule(data_dir=str(tmp_path), name="novel", seq_len=2, download=False).setup()
    write(tmp_path, b"ok\nna\xefve\n", "bad.txt")
    with pytest.raises(ValueError, match=r"bad.txt:2: byte 0xef at column 3 is not valid utf-8 text"):
        TextDataModule(data_dir=str(tmp_path), files={**files, "valid": "bad.txt"}, seq_len=2, download=False).setup()
    latin = TextDataModule(data_dir=str(tmp_path), files={**files, "valid": "bad.txt"}, encoding="latin-1",
                           max_vocab=3, seq_len=2, download=False)
    assert latin.vocabulary() == ["<eos>", "<unk>", "cat"]  # na\xefve decodes, and maps to <unk>


@pytest.mark.parametrize("kwargs, match", [
    ({"max_vocab": 0}, r"data.init_args.max_vocab must be an integer >= 3, got 0"),
    ({"max_vocab": 1}, r"data.init_args.max_vocab must be an integer >= 3, got 1"),
    ({"max_vocab": -5}, r"data.init_args.max_vocab must be an integer >= 3, got -5"),
    ({"seq_len": 0}, r"data.init_args.seq_len must be an integer >= 2, got 0"),
    ({"seq_len": -3}, r"data.init_args.seq_len must be an integer >= 2, got -3"),
    ({"batch_size": 0}, r"data.init_args.batch_size must be an integer >= 1, got 0"),
])
def test_text_config_values_are_checked_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TextDataModule(data_dir="/nowhere", **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"seq_len": 0}, r"data.init_args.seq_len must be an integer >= 1, got 0"),
    ({"batch_size": 0}, r"data.init_args.batch_size must be an integer >= 1, got 0"),
    ({"min_interactions": 2}, r"data.init_args.min_interactions must be an integer >= 3, got 2"),
    ({"item_col": 0}, r"user_col=0, item_col=0 and timestamp_col=3 must be three different columns"),
    ({"user_col": -1}, r"data.init_args.user_col must be an integer >= 0, got -1"),
])
def test_interaction_config_values_are_checked_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InteractionDataModule(data_dir="/nowhere", **kwargs)


def test_ptb_real_data(real_data_dir):
    dm = TextDataModule(data_dir=str(real_data_dir / "ptb"), seq_len=35, download=False)
    assert dm.vocab_size == 10_000
    assert [len(dm.streams[s]) for s in ("train", "valid", "test")] == [929_589, 73_760, 82_430]  # SOURCE.md
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (20, 35) and dm.decode(x[0, :3]) == "no it was"


def test_ml100k_real_data(real_data_dir):
    dm = InteractionDataModule(data_dir=str(real_data_dir / "ml-100k"), download=False)
    assert len(dm.split.user_ids) == 943 and dm.num_items == 1682
    assert sum(len(t) for t in dm.split.train) == 100_000 - 2 * 943


def test_modified_known_file_fails_md5(tmp_path, real_data_dir, monkeypatch):
    monkeypatch.delenv("FARZI_VERIFY", raising=False)
    shutil.copy(real_data_dir / "ml-100k" / "u.data", tmp_path / "u.data")
    with open(tmp_path / "u.data", "a") as f:
        f.write("1\t1\t1\t1\n")
    with pytest.raises(ValueError, match=r"u.data: md5 .* differs from the canonical"):
        InteractionDataModule(data_dir=str(tmp_path), download=False).prepare_data()


def test_download_when_absent_is_checked_and_failures_are_clear(tmp_path, monkeypatch):
    import io
    import urllib.error
    import zipfile

    import farzi_lightning.data.locate as locate

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(locate.urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match=r"u.data not found in .*ml-100k.*download from https://.*failed"):
        InteractionDataModule(data_dir=str(tmp_path / "ml-100k")).prepare_data()

    archive = io.BytesIO()  # a well-formed archive whose u.data is not the canonical file
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("u.data", "u.item", "README"):
            z.writestr(f"ml-100k/{name}", "1\t2\t3\t4\n")

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(locate.urllib.request, "urlopen", lambda url, timeout: Response(archive.getvalue()))
    with pytest.raises(FileNotFoundError, match="wrong md5"):
        InteractionDataModule(data_dir=str(tmp_path / "ml-100k")).prepare_data()
    assert not (tmp_path / "ml-100k" / "u.data").exists()  # nothing half-downloaded takes the real name


def test_a_byte_order_mark_is_removed_aloud(tmp_path):
    """A UTF-8 BOM would glue itself to the first user id (losing an event) or the first word (a new word)."""
    plain = read_interactions(write(tmp_path, HAND_MADE))
    with pytest.warns(UserWarning, match=r"bom.tsv: removed the UTF-8 byte-order mark"):
        marked = read_interactions(write(tmp_path, b"\xef\xbb\xbf" + HAND_MADE.encode(), "bom.tsv"))
    assert [r[:3] for r in marked] == [r[:3] for r in plain]
    for split in ("train", "valid", "test"):
        write(tmp_path, "a b c d e f\n" * 3, f"{split}.txt")
    words = TextDataModule(data_dir=str(tmp_path), name="corpus", download=False, seq_len=4).vocabulary()
    (tmp_path / "train.txt").write_bytes(b"\xef\xbb\xbf" + b"a b c d e f\n" * 3)
    with pytest.warns(UserWarning, match=r"train.txt: removed the UTF-8 byte-order mark"):
        assert TextDataModule(data_dir=str(tmp_path), name="corpus", download=False, seq_len=4).vocabulary() == words


@pytest.mark.parametrize("stamp", ["nan", "inf", "-inf"])
def test_non_finite_timestamps_are_refused_with_file_and_line(tmp_path, stamp):
    with pytest.raises(ValueError, match=rf"log.tsv:2: timestamp '{stamp}' in column 3 is not a finite number"):
        read_interactions(write(tmp_path, f"7\t10\t5\t1\n7\t11\t5\t{stamp}\n"))


def test_text_splits_too_small_to_train_or_score_are_refused(tmp_path):
    for split in ("train", "valid", "test"):
        write(tmp_path, "a b c d e f\n", f"{split}.txt")
    TextDataModule(data_dir=str(tmp_path), name="corpus", seq_len=6, download=False).setup("fit")  # 7 tokens
    with pytest.raises(ValueError, match=r"train.txt: the train split has 7 token\(s\) .*at least 8 are needed to "
                                         r"train on one window of data.init_args.seq_len=7"):
        TextDataModule(data_dir=str(tmp_path), name="corpus", download=False, seq_len=7).setup("fit")
    write(tmp_path, "a\n", "valid.txt")
    with pytest.raises(ValueError, match=r"valid.txt: the valid split has 2 token\(s\) .*at least 7 are needed to "
                                         r"score one window of data.init_args.seq_len=6"):
        TextDataModule(data_dir=str(tmp_path), name="corpus", download=False, seq_len=6).setup("fit")
