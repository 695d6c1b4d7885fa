"""Filing validated entries on a board, each under a stable, content-addressed name.

A board is a directory with ``entries/<experiment>/<cell-id>-<hash12>.json``. Filing is
all-or-nothing per submission and each file is written to a temporary name and renamed,
so a reader (the site build, ``compare``) never sees a half-written entry.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from subbench.leaderboard.entries import hash12, read_entry


@dataclass
class Submission:
    filed: list[tuple[Path, Path]]  # (source, destination)
    problems: list[str]  # "PATH: problem"


def entry_name(entry: dict) -> Path:
    return Path(entry["experiment"]["name"]) / f"{entry['cell']['id']}-{hash12(entry)}.json"


def board_hashes(board: Path) -> dict[str, Path]:
    """content_hash -> file, for every readable entry already on the board."""
    out: dict[str, Path] = {}
    root = Path(board) / "entries"
    if not root.is_dir():
        return out
    for f in sorted(root.rglob("*.json")):
        loaded = read_entry(f)
        if loaded.entry is not None and isinstance(loaded.entry.get("content_hash"), str):
            out.setdefault(loaded.entry["content_hash"], f)
    return out


def atomic_write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def submit(paths: Iterable[str | Path], board: Path) -> Submission:
    from subbench.leaderboard.validate import validate_paths

    board = Path(board)
    results = validate_paths(paths)
    problems = [f"{r.path}: {p}" for r in results for p in r.problems]
    on_board = board_hashes(board)
    planned: list[tuple[Path, Path, dict]] = []
    batch: dict[str, Path] = {}
    for r in results:
        if r.problems or r.entry is None:
            continue
        h = r.entry["content_hash"]
        if h in on_board:
            problems.append(f"{r.path}: duplicate: an entry with content_hash {h} is already on the board "
                            f"as {on_board[h]}")
        elif h in batch:
            problems.append(f"{r.path}: duplicate: the same entry (content_hash {h}) is also submitted as {batch[h]}")
        else:
            batch[h] = r.path
            planned.append((r.path, board / "entries" / entry_name(r.entry), r.entry))
    if problems:
        return Submission([], problems)
    for src, dest, entry in planned:
        atomic_write_json(dest, entry)
    return Submission([(src, dest) for src, dest, _ in planned], [])
