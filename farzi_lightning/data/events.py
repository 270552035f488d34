"""Reading an interaction log and splitting it: rows of (user, item, timestamp) from any CSV/TSV (MovieLens
100K's ``u.data``), de-duplicated, users with too few events dropped, then leave-last-out per user
(docs/distillation.md, "Data protocol"); item titles for display."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .windows import natural_key, read_lines


@dataclass(frozen=True)
class Split:
    """Leave-last-out split with contiguous ids: items 1..num_items (0 is padding), users 0..n-1."""

    train: list[list[int]]  # per user, training items in order
    valid: list[int]  # per user, the validation item
    test: list[int]  # per user, the test item
    num_items: int
    item_ids: list[str]  # original id of item i is item_ids[i - 1]
    user_ids: list[str]
    report: dict[str, int] = field(default_factory=dict)  # what each filter removed (``describe``)


def _timestamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def read_interactions(path: Path, *, delimiter: str = "\t", header: bool = False, user_col: int = 0,
                      item_col: int = 1, timestamp_col: int = 3,
                      encoding: str = "utf-8") -> list[tuple[str, str, float, int]]:
    """``(user, item, timestamp, line number)`` rows; malformed input raises naming ``file:line``.

    Ids are any strings (numbers, ASINs, hashes); timestamps are numbers or ISO-8601 dates.
    """
    rows = []
    need = max(user_col, item_col, timestamp_col) + 1
    for n, fields in enumerate(csv.reader(read_lines(path, encoding), delimiter=delimiter), 1):
        if header and n == 1:
            continue
        if not fields or all(not x.strip() for x in fields):
            continue
        if len(fields) < need:
            raise ValueError(f"{path}:{n}: expected at least {need} columns separated by {delimiter!r} "
                             f"(user in {user_col}, item in {item_col}, timestamp in {timestamp_col}), "
                             f"got {len(fields)}: {delimiter.join(fields)!r}")
        user, item, ts = fields[user_col].strip(), fields[item_col].strip(), fields[timestamp_col].strip()
        for what, value, col in (("user", user, user_col), ("item", item, item_col)):
            if not value:
                raise ValueError(f"{path}:{n}: the {what} id in column {col} is empty")
        try:
            stamp = _timestamp(ts)
        except ValueError:
            raise ValueError(f"{path}:{n}: timestamp {ts!r} in column {timestamp_col} is neither a number nor an "
                             "ISO-8601 date") from None
        if not math.isfinite(stamp):
            raise ValueError(f"{path}:{n}: timestamp {ts!r} in column {timestamp_col} is not a finite number (it "
                             "would scramble the user's order and so the leave-last-out split)")
        rows.append((user, item, stamp, n))
    if not rows:
        raise ValueError(f"{path}: no interactions found (the file is empty{' but for its header' if header else ''})")
    return rows


def leave_last_out(rows: list[tuple[str, str, float, int]], min_interactions: int = 3,
                   path: Path | str = "<interactions>", dedup: bool = True) -> Split:
    """Per user: sort by (timestamp, file order), keep each item's first interaction (``dedup``), hold out the
    last two; drop users below ``min_interactions``. ``Split.report`` counts what each filter removed."""
    if min_interactions < 3:
        raise ValueError(f"data.init_args.min_interactions must be at least 3 (one training, one validation, one "
                         f"test item), got {min_interactions}")
    report = {"rows": len(rows), "exact_duplicates": 0, "repeated_pairs": 0, "short_users": 0, "short_events": 0}
    by_user: dict[str, list[tuple[float, int, str]]] = {}
    for user, item, stamp, line in rows:
        by_user.setdefault(user, []).append((stamp, line, item))
    kept: dict[str, list[str]] = {}
    for user, events in by_user.items():
        events.sort()
        if dedup:
            seen: set[str] = set()
            exact: set[tuple[float, str]] = set()
            unique = []
            for stamp, _, item in events:
                if (stamp, item) in exact:
                    report["exact_duplicates"] += 1
                elif item in seen:
                    report["repeated_pairs"] += 1
                else:
                    unique.append(item)
                seen.add(item)
                exact.add((stamp, item))
            items = unique
        else:
            items = [item for _, _, item in events]
        if len(items) < min_interactions:
            report["short_users"] += 1
            report["short_events"] += len(items)
            continue
        kept[user] = items
    if not kept:
        raise ValueError(f"{path}: no user has at least min_interactions={min_interactions} interactions "
                         f"({len(by_user)} users in the file{', after de-duplication' if dedup else ''})")
    users = sorted(kept, key=natural_key)
    item_ids = sorted({i for u in users for i in kept[u]}, key=natural_key)
    index = {item: n + 1 for n, item in enumerate(item_ids)}
    seqs = [[index[i] for i in kept[u]] for u in users]
    report.update(users=len(users), events=sum(len(s) for s in seqs), items=len(item_ids))
    return Split(train=[s[:-2] for s in seqs], valid=[s[-2] for s in seqs], test=[s[-1] for s in seqs],
                 num_items=len(item_ids), item_ids=item_ids, user_ids=users, report=report)


def describe(report: dict[str, int], path: Path | str) -> str:
    """One line: what was read and what each filter removed."""
    return (f"{path}: {report['rows']:,} rows; de-duplication removed {report['exact_duplicates']:,} exact "
            f"duplicates and {report['repeated_pairs']:,} repeated (user, item) pairs; {report['short_users']:,} "
            f"users with fewer than min_interactions events dropped ({report['short_events']:,} events); kept "
            f"{report['users']:,} users, {report['items']:,} items, {report['events']:,} events")


@dataclass(frozen=True)
class ItemTitles:
    """A CSV/TSV file naming the items (ML-100k's ``u.item``: ``id|title|...``, Latin-1), read for display.

    Args:
        file: the file, inside the data folder (or an absolute path).
        delimiter: column separator.
        id_col: 0-based column of the item id (as in the interaction file).
        title_col: 0-based column of the title.
        header: the first line is a header.
        encoding: the file's text encoding.
    """

    file: str
    delimiter: str = "|"
    id_col: int = 0
    title_col: int = 1
    header: bool = False
    encoding: str = "utf-8"

    def read(self, root: Path) -> dict[str, str]:
        """``{item id: title}``; a malformed line raises naming ``file:line``."""
        path = root / self.file
        if not path.is_file():
            raise FileNotFoundError(f"data.init_args.titles.file: {path} not found")
        titles = {}
        lines = read_lines(path, self.encoding, key="data.init_args.titles.encoding")
        for n, fields in enumerate(csv.reader(lines, delimiter=self.delimiter), 1):
            if (self.header and n == 1) or not fields:
                continue
            if len(fields) <= max(self.id_col, self.title_col):
                raise ValueError(f"{path}:{n}: expected an id in column {self.id_col} and a title in column "
                                 f"{self.title_col} separated by {self.delimiter!r}, got {len(fields)} columns")
            titles[fields[self.id_col].strip()] = fields[self.title_col].strip()
        return titles
