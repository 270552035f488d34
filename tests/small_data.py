"""Small data sets the tests write themselves: an interaction log with string ids, duplicates and short users
(with an item-title CSV), and a text corpus named ``<name>.<split>.txt`` with a large raw vocabulary."""

from __future__ import annotations

import csv
from pathlib import Path

import torch


def write_interactions(root: Path, users: int = 40, items: int = 30, events: int = 16) -> Path:
    """``ratings.csv`` (ASIN-like item ids, reviewer-like user ids, header ``asin,reviewer,rating,time``):
    ``users`` users × ``events`` distinct items, plus an exact duplicate row, a repeated (user, item) pair and
    two users with too few events; ``titles.csv`` names every item but the last."""
    root.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(3)
    asin = [f"B0{i:04d}X" for i in range(items)]
    rows = []
    for u in range(users):
        for t, i in enumerate(torch.randperm(items, generator=generator)[:events].tolist()):
            rows.append((asin[i], f"A{u:03d}Z", 5, 1000 + t))
    rows.append(rows[0])  # an exact duplicate
    rows.append((rows[1][0], rows[1][1], 1, 5000))  # the same user and item again, later
    rows += [(asin[0], "SHORT1", 5, 1), (asin[1], "SHORT2", 5, 1), (asin[2], "SHORT2", 4, 2)]
    with open(root / "ratings.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["asin", "reviewer", "rating", "time"])
        out.writerows(rows)
    with open(root / "titles.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["item_id", "title"])
        for i, a in enumerate(asin[:-1]):
            out.writerow([a, f"Film <{i}>, part {i % 3}"])  # a comma and HTML-like brackets
    return root


def write_corpus(root: Path, name: str = "novel", vocab: int = 3000, lines: tuple[int, int, int] = (400, 40, 40)
                 ) -> Path:
    """``<name>.train.txt``/``.valid.txt``/``.test.txt``: Zipf-like sentences over ``vocab`` raw words."""
    root.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(5)
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    words = [f"w{i}" for i in range(vocab)]
    for split, n in zip(("train", "valid", "test"), lines):
        with open(root / f"{name}.{split}.txt", "w") as f:
            for _ in range(n):
                ids = torch.multinomial(weights, 12, replacement=True, generator=generator).tolist()
                f.write(" ".join(words[i] for i in ids) + "\n")
    return root


def write_standins(root: Path) -> Path:
    """Offline stand-ins for ``ml-100k/`` and ``ptb/`` with the real sets' file names, id ranges and vocabulary
    size (1,682 items, 10,000 words incl. ``<unk>`` and ``<eos>``), but a fraction of their size."""
    generator = torch.Generator().manual_seed(11)
    ml = root / "ml-100k"
    ml.mkdir(parents=True, exist_ok=True)
    popularity = 1.0 / torch.arange(1, 1683, dtype=torch.float64) ** 0.8
    with open(ml / "u.data", "w") as f:
        for user in range(1, 301):
            length = int(torch.randint(20, 90, (1,), generator=generator))
            items = torch.multinomial(popularity, length, replacement=False, generator=generator) + 1
            for t, item in enumerate(items.tolist()):
                f.write(f"{user}\t{item}\t{1 + (user + item) % 5}\t{880000000 + 1000 * user + t}\n")
        for item in range(1, 1683):  # every item occurs at least once, as in ML-100k
            f.write(f"301\t{item}\t3\t{890000000 + item}\n")
    with open(ml / "u.item", "w", encoding="latin-1") as f:
        for item in range(1, 1683):
            f.write(f"{item}|Movie {item} (199{item % 10})|01-Jan-1995||http://example.org/{item}|0|1\n")
    ptb = root / "ptb"
    ptb.mkdir(parents=True, exist_ok=True)
    words = ["<unk>"] + [f"w{i}" for i in range(9998)]
    zipf = 1.0 / torch.arange(1, len(words) + 1, dtype=torch.float64)
    for split, tokens in (("train", 40_000), ("valid", 4_000), ("test", 4_000)):
        ids = torch.multinomial(zipf, tokens, replacement=True, generator=generator).tolist()
        if split == "train":
            ids = list(range(len(words))) + ids  # every word once: a 10,000-entry vocabulary with <eos>
        with open(ptb / f"ptb.{split}.txt", "w") as f:
            for start in range(0, len(ids), 20):
                f.write(" " + " ".join(words[i] for i in ids[start:start + 20]) + " \n")
    return root
