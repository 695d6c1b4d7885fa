"""Leaderboard entries: one standardized JSON document per cell of a run.

The format is documented field by field in docs/entry-format.md. ``content_hash`` is the
sha256 of the canonical JSON of the entry without that field, so any edit to a number
without a new hash is detectable.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from subbench.hashing import canonical_json, sha256_text

SCHEMA_VERSION = 2
PACKAGES = ("torch", "transformers", "peft", "trl", "lm_eval", "pluggy", "numpy")


def content_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "content_hash"}
    return "sha256:" + sha256_text(canonical_json(body))


def seal(entry: dict[str, Any]) -> dict[str, Any]:
    entry = dict(entry)
    entry["content_hash"] = content_hash(entry)
    return entry


def environment(device: str) -> dict[str, Any]:
    from subbench.reproducibility import settings

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "device": device,
        **settings(),
    }
    for pkg in PACKAGES:
        try:
            env[pkg] = metadata.version(pkg.replace("_", "-"))
        except metadata.PackageNotFoundError:
            try:
                env[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                env[pkg] = None
    return env


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the subbench checkout, with ``-dirty`` when it has local changes."""
    from subbench.resources import source_root

    cwd = path or source_root()
    if cwd is None:  # an installed package: no checkout to name
        return None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def relation(teacher_family: str, teacher_seed: int, student_family: str, student_seed: int) -> str:
    if student_family != teacher_family:
        return "cross-architecture"
    return "same-init" if student_seed == teacher_seed else "cross-init"
