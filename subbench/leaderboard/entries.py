"""Finding, reading and describing entries on disk: results directories and boards alike."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from subbench.errors import SubbenchError

#: Schema file of each entry version this subbench reads (v1: one pooled ratio; v2: replicates,
#: budgets, secondary metrics).
SCHEMA_FILES = {1: "entry-v1.json", 2: "entry-v2.json"}
SCHEMA_NAME = SCHEMA_FILES[max(SCHEMA_FILES)]

# Bounds that make reading an entry total and cheap, whatever a stranger put in the file.
MAX_ENTRY_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 64
MAX_INT_DIGITS = 30

#: Fields that say when, where and with what a measurement was made, not what was measured.
VOLATILE_FIELDS = ("created", "environment", "git_commit", "content_hash", "subbench_version")


def schema_path(version: int | None = None) -> Path:
    from subbench.resources import schema_dir

    return schema_dir() / SCHEMA_FILES.get(version or max(SCHEMA_FILES), SCHEMA_NAME)


def load_schema(version: int | None = None) -> dict[str, Any]:
    path = schema_path(version)
    if not path.is_file():
        raise SubbenchError(f"The entry schema {path} is missing; reinstall subbench from a full checkout.")
    return json.loads(path.read_text(encoding="utf-8"))


def measurement_hash(entry: dict[str, Any]) -> str:
    """``sha256:`` of the entry without its volatile fields: the identity of what was measured.

    Two entries that differ only in when, where or by which build they were written are one
    measurement: ``submit`` refuses the second and ``compare`` counts it once.
    """
    from subbench.hashing import sha256_json

    return "sha256:" + sha256_json({k: v for k, v in entry.items() if k not in VOLATILE_FIELDS})


def is_board(path: Path) -> bool:
    return path.is_dir() and (path / "entries").is_dir()


def entry_files(paths: Iterable[str | Path]) -> list[Path]:
    return [f for f, _ in entry_sources(paths)]


def entry_sources(paths: Iterable[str | Path]) -> list[tuple[Path, Path | None]]:
    """(file, board entries/ root or None) for every ``*.json`` named or found below ``paths``; a board contributes every file of its entries/.

    On a board nothing is skipped: a hidden file, a file that is not ``*.json`` or a
    symbolic link is returned too, and validation reports it, so what a board holds is what
    ``validate`` and ``build`` see. In a results directory, hidden files are skipped.
    """
    found: list[tuple[Path, Path | None]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists() and not p.is_symlink():
            raise SubbenchError(f"{p} does not exist; give entry files, results directories or a board.")
        if not p.is_dir():
            found.append((p, None))
            continue
        if is_board(p):
            from subbench.leaderboard.board import recover

            recover(p)
            root = p / "entries"
            found += [(q, root) for q in sorted(root.rglob("*")) if (q.is_symlink() or not q.is_dir())
                      and not _placeholder(q)]
            continue
        found += [(q, None) for q in sorted(p.rglob("*.json")) if q.is_file() and not _hidden(q, p)]
    seen, out = set(), []
    for f, root in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            out.append((f, root))
    return out


def _placeholder(path: Path) -> bool:
    """An empty ``.gitkeep`` keeps an empty board in git; it is the one file a board may hold besides entries."""
    return path.name == ".gitkeep" and path.is_file() and not path.is_symlink() and path.stat().st_size == 0


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") or part == "site" for part in path.relative_to(root).parts)


@dataclass
class Loaded:
    path: Path
    entry: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)


class _Refused(ValueError):
    pass


def _constant(name: str):
    raise _Refused(f"holds {name}, which is not a JSON number; entries hold finite numbers only")


def _float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise _Refused(f"holds the number {text[:40]}, which overflows a double; entries hold finite numbers only")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"holds an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS} are read)")
    return int(text)


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _depth(text: str) -> int:
    """Deepest nesting of arrays and objects, strings skipped; stops counting past MAX_DEPTH."""
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
        elif c in "]}":
            depth -= 1
    return deepest


def parse_json(text: str) -> Any:
    """``json.loads`` that is total and bounded: bounded depth, no NaN/Infinity/overflow, short integers.

    Raises ValueError with a one-line reason for anything it will not read.
    """
    if _depth(text) > MAX_DEPTH:
        raise _Refused(f"nests arrays/objects deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except _Refused:
        raise
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"is not valid JSON ({str(exc)[:100]})") from None


def read_entry(path: Path) -> Loaded:
    path = Path(path)
    if path.is_symlink():
        return Loaded(path, None, ["is a symbolic link; give the entry file itself"])
    if not path.is_file():
        return Loaded(path, None, ["is not a regular file"])
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ENTRY_BYTES + 1)
        if len(data) > MAX_ENTRY_BYTES:
            return Loaded(path, None, [f"is larger than {MAX_ENTRY_BYTES // (1024 * 1024)} MiB, more than any "
                                       "entry needs; it was not read"])
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Loaded(path, None, [f"cannot be read ({exc})"])
    try:
        entry = parse_json(text)
    except ValueError as exc:
        return Loaded(path, None, [str(exc)])
    if not isinstance(entry, dict):
        return Loaded(path, None, [f"is not an entry (a JSON object), got {type(entry).__name__}"])
    return Loaded(path, entry)


# -- what the site and compare show of an entry ----------------------------------

def injector_label(e: dict[str, Any]) -> str:
    setting = e["cell"]["teacher_setting"]
    return e["injector"]["name"] + ("" if setting == "default" else f" ({setting})")


def student_label(e: dict[str, Any]) -> str:
    return f"{e['student']['family']} ({e['student']['relation']})"


def student_family_label(e: dict[str, Any]) -> str:
    """The student's family, or ``other init`` for its teacher's family from another seed.

    With teachers as rows this makes a square matrix whose diagonal is the same-init
    student, plus one column of cross-init students (a family never pools with another).
    """
    rel = e["student"]["relation"]
    if rel == "cross-init":
        return "other init"
    return e["student"]["family"] if rel in ("same-init", "cross-architecture") else f"{e['student']['family']} ({rel})"


def trait_label(e: dict[str, Any]) -> str:
    t = e["trait"]
    return t["name"] + (f":{t['target']}" if t.get("target") else "")


DIMENSIONS = {
    "teacher": lambda e: e["teacher"]["family"],
    "student": student_label,
    "student_family": student_family_label,
    "relation": lambda e: e["student"]["relation"],
    "injector": lambda e: e["injector"]["name"],
    "teacher_setting": lambda e: e["cell"]["teacher_setting"],
    "domain": lambda e: e["domain"]["name"],
    "distillation": lambda e: e["cell"]["distillation"],
    "trait": trait_label,
    "judge": lambda e: e["judge"]["name"],
    "mitigation": lambda e: (e.get("mitigation") or {}).get("label") or (e.get("mitigation") or {}).get("name") or "none",
    "experiment": lambda e: e["experiment"]["name"],
}


def hash12(entry: dict[str, Any]) -> str:
    return str(entry.get("content_hash", "")).split(":", 1)[-1][:12]
