"""Finding, reading and describing entries on disk: results directories and boards alike."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from subbench.errors import SubbenchError

#: Schema file of each entry version this subbench reads (v1: one pooled ratio; v2: replicates,
#: budgets, secondary metrics).
SCHEMA_FILES = {1: "entry-v1.json", 2: "entry-v2.json"}
SCHEMA_NAME = SCHEMA_FILES[max(SCHEMA_FILES)]


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent.parent


def schema_path(version: int | None = None) -> Path:
    return repo_root() / "leaderboard" / "schema" / SCHEMA_FILES.get(version or max(SCHEMA_FILES), SCHEMA_NAME)


def load_schema(version: int | None = None) -> dict[str, Any]:
    path = schema_path(version)
    if not path.is_file():
        raise SubbenchError(f"The entry schema {path} is missing; reinstall subbench from a full checkout.")
    return json.loads(path.read_text(encoding="utf-8"))


def is_board(path: Path) -> bool:
    return path.is_dir() and (path / "entries").is_dir()


def entry_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``*.json`` named or found below ``paths``; a board contributes only its entries/."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise SubbenchError(f"{p} does not exist; give entry files, results directories or a board.")
        if p.is_file():
            found.append(p)
            continue
        root = p / "entries" if is_board(p) else p
        found += sorted(q for q in root.rglob("*.json") if q.is_file() and not _hidden(q, root))
    seen, out = set(), []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") or part == "site" for part in path.relative_to(root).parts)


@dataclass
class Loaded:
    path: Path
    entry: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)


def read_entry(path: Path) -> Loaded:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Loaded(path, None, [f"cannot be read ({exc})"])
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as exc:
        return Loaded(path, None, [f"is not valid JSON (line {exc.lineno}: {exc.msg})"])
    if not isinstance(entry, dict):
        return Loaded(path, None, [f"is not an entry (a JSON object), got {type(entry).__name__}"])
    return Loaded(path, entry)


# -- what the site and compare show of an entry ----------------------------------

def injector_label(e: dict[str, Any]) -> str:
    setting = e["cell"]["teacher_setting"]
    return e["injector"]["name"] + ("" if setting == "default" else f" ({setting})")


def student_label(e: dict[str, Any]) -> str:
    return f"{e['student']['family']} ({e['student']['relation']})"


def trait_label(e: dict[str, Any]) -> str:
    t = e["trait"]
    return t["name"] + (f":{t['target']}" if t.get("target") else "")


DIMENSIONS = {
    "teacher": lambda e: e["teacher"]["family"],
    "student": student_label,
    "relation": lambda e: e["student"]["relation"],
    "injector": lambda e: e["injector"]["name"],
    "teacher_setting": lambda e: e["cell"]["teacher_setting"],
    "domain": lambda e: e["domain"]["name"],
    "distillation": lambda e: e["cell"]["distillation"],
    "trait": trait_label,
    "judge": lambda e: e["judge"]["name"],
    "mitigation": lambda e: (e.get("mitigation") or {}).get("name") or "none",
    "experiment": lambda e: e["experiment"]["name"],
}


def hash12(entry: dict[str, Any]) -> str:
    return str(entry.get("content_hash", "")).split(":", 1)[-1][:12]
