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
