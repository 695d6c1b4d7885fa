"""Filing validated entries on a board, each under a stable, content-addressed name.

A board is a directory with ``entries/<experiment>/<cell-id>-<hash12>.json``, the parts
made safe by :func:`subbench.leaderboard.paths.safe_join` (an entry is a stranger's file).

A submission is all-or-nothing, even if the process is killed half-way. Under the board's
lock (``flock`` on its directory) it stages every file in ``.submit-<pid>.tmp/`` on the same file system,
with a ``manifest.json``; renaming that directory to ``.submit-pending`` is the commit
point. The files are then moved in one by one and the directory removed. Whoever next opens
the board (submit, build, validate, compare) first finishes a committed ``.submit-pending``
(roll forward) and deletes uncommitted ``.submit-*.tmp`` directories (roll back), so a kill
leaves either nothing or, once the board is next opened, everything.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from subbench.leaderboard.entries import hash12, measurement_hash, read_entry
from subbench.leaderboard.paths import safe_join

PENDING = ".submit-pending"
MANIFEST = "manifest.json"
#: Test hook: seconds to sleep between the moves of a submission, so a test can kill it half-way.
SLEEP_ENV = "SUBBENCH_TEST_SUBMIT_SLEEP"


@dataclass
class Submission:
    filed: list[tuple[Path, Path]]  # (source, destination)
    problems: list[str]  # "PATH: problem"
    completed: list[Path] = field(default_factory=list)  # files an interrupted submission left to finish


def entry_name(entry: dict) -> Path:
    """Where ``entry`` lives, relative to the board's entries/ directory."""
    return safe_join(".", entry["experiment"]["name"], f"{entry['cell']['id']}-{hash12(entry)}",
                     suffix=".json").relative_to(".")


def entry_dest(board: Path, entry: dict) -> Path:
    root = Path(board) / "entries"
    return safe_join(root, *entry_name(entry).parts)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def locked(board: Path):
    """The board's exclusive lock: one writer (submit, recovery) at a time."""
    board = Path(board)
    board.mkdir(parents=True, exist_ok=True)
    fd = os.open(board, os.O_RDONLY)  # the directory itself is the lock: no lock file to leave behind
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _roll_forward(board: Path) -> list[Path]:
    """Finish a committed submission; returns the destinations it covers."""
    pending = board / PENDING
    manifest = json.loads((pending / MANIFEST).read_text(encoding="utf-8"))
    done = []
    for item in manifest["files"]:
        src = pending / item["staged"]
        dest = safe_join(board / "entries", *Path(item["dest"]).parts)
        if src.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
            _fsync_dir(dest.parent)
        done.append(dest)
    shutil.rmtree(pending)
    _fsync_dir(board)
    return done


def recover(board: Path, *, _held: bool = False) -> list[Path]:
    """Finish or undo what a killed submission left; returns the files it finished filing.

    A board the user cannot write is left as it is (a reader then sees what is there).
    """
    board = Path(board)
    if not (board / PENDING).exists() and not any(board.glob(".submit-*.tmp")):
        return []
    try:
        ctx = contextlib.nullcontext() if _held else locked(board)
        with ctx:
            for stale in board.glob(".submit-*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            if (board / PENDING).exists():
                return _roll_forward(board)
    except OSError:
        return []
    return []


def board_hashes(board: Path) -> dict[str, Path]:
    """measurement hash -> file, for every readable entry already on the board."""
    out: dict[str, Path] = {}
    root = Path(board) / "entries"
    if not root.is_dir():
        return out
    for f in sorted(root.rglob("*.json")):
        loaded = read_entry(f)
        if loaded.entry is not None:
            with contextlib.suppress(Exception):
                out.setdefault(measurement_hash(loaded.entry), f)
    return out


def _write(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write(tmp, obj)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def submit(paths: Iterable[str | Path], board: Path) -> Submission:
    from subbench.leaderboard.validate import validate_paths

    board = Path(board)
    results = validate_paths(paths)
    with locked(board):
        completed = recover(board, _held=True)
        just_filed = {p.resolve() for p in completed}
        problems = [f"{r.path}: {p}" for r in results for p in r.problems]
        on_board = board_hashes(board)
        planned: list[tuple[Path, Path, dict]] = []
        batch: dict[str, Path] = {}
        finished: list[tuple[Path, Path]] = []
        for r in results:
            if r.problems or r.entry is None:
                continue
            h = measurement_hash(r.entry)
            try:
                dest = entry_dest(board, r.entry)
            except Exception as exc:  # noqa: BLE001 - a name that cannot be made safe is the entry's problem
                problems.append(f"{r.path}: {exc}")
                continue
            if h in on_board and on_board[h].resolve() in just_filed and on_board[h].resolve() == dest.resolve():
                finished.append((r.path, dest))  # filed by the interrupted submission this one repeats
            elif h in on_board:
                problems.append(f"{r.path}: duplicate: the same measurement (measurement_hash {h}) is already on "
                                f"the board as {on_board[h]}")
            elif h in batch:
                problems.append(f"{r.path}: duplicate: the same measurement (measurement_hash {h}) is also "
                                f"submitted as {batch[h]}")
            else:
                batch[h] = r.path
                planned.append((r.path, dest, r.entry))
        if problems:
            return Submission([], problems, completed)
        if planned:
            _file(board, planned)
        return Submission(finished + [(src, dest) for src, dest, _ in planned], [], completed)


def _file(board: Path, planned: list[tuple[Path, Path, dict]]) -> None:
    pause = float(os.environ.get(SLEEP_ENV) or 0)
    stage = board / f".submit-{os.getpid()}.tmp"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        files = []
        for i, (_, dest, entry) in enumerate(planned):
            name = f"{i:06d}.json"
            _write(stage / name, entry)
            files.append({"staged": name, "dest": str(dest.relative_to(board / "entries"))})
        _write(stage / MANIFEST, {"files": files})
        _fsync_dir(stage)
        os.rename(stage, board / PENDING)  # the commit point
        _fsync_dir(board)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    pending = board / PENDING
    for item in files:
        if pause:
            time.sleep(pause)
        dest = board / "entries" / item["dest"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(pending / item["staged"], dest)
    for d in {board / "entries" / Path(item["dest"]).parent for item in files}:
        _fsync_dir(d)
    shutil.rmtree(pending)
    _fsync_dir(board)
