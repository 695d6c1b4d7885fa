"""Where subbench's shipped files are: experiments, trait tasks, judge templates, the entry schema.

Their home in the source tree is the top level (``tasks/``, ``leaderboard/schema/``), so that
``lm-eval --include_path tasks/traits`` and a reader of the repository find them where the
docs say. A wheel cannot carry files outside its packages, so the build (``setup.py``'s
``build_py``) copies both into ``subbench/_data/``. This module is the one place that knows
the two layouts: an installed package reads ``subbench/_data``, a checkout (or an editable
install) reads the top level. Nothing else in subbench builds these paths itself.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: The copy made at build time inside an installed package.
DATA_DIR = PACKAGE_DIR / "_data"
#: ``SUBBENCH_EXPERIMENT_PATH``: more directories of experiments (``os.pathsep``-separated).
EXPERIMENT_PATH_ENV = "SUBBENCH_EXPERIMENT_PATH"
#: The older name of the same variable, still read.
LEGACY_EXPERIMENT_PATH_ENV = "SUBBENCH_TASKS"


def source_root() -> Path | None:
    """The checkout subbench runs from, or None for an installed (non-editable) package."""
    root = PACKAGE_DIR.parent
    if (root / "tasks").is_dir() and (root / "setup.cfg").is_file() and not DATA_DIR.is_dir():
        return root
    return None


def _data_root() -> Path:
    return DATA_DIR if DATA_DIR.is_dir() else PACKAGE_DIR.parent


def tasks_dir() -> Path:
    """The shipped experiments (``tasks/*.yaml``; shared parts in ``tasks/include``)."""
    return _data_root() / "tasks"


def trait_tasks_dir() -> Path:
    """The lm-eval trait tasks and their data (``tasks/traits``)."""
    return tasks_dir() / "traits"


def judge_templates_dir() -> Path:
    """The versioned judge prompt templates (``tasks/judges``)."""
    return tasks_dir() / "judges"


def schema_dir() -> Path:
    """The entry JSON schemas (``leaderboard/schema``)."""
    return _data_root() / "leaderboard" / "schema"


def experiment_dirs() -> list[tuple[Path, str]]:
    """Where experiments are looked up by name, first match wins, each with where it comes from.

    ``./tasks`` (the current directory), then ``$SUBBENCH_EXPERIMENT_PATH`` in order, then the
    experiments shipped with subbench; a directory named twice counts once.
    """
    dirs: list[tuple[Path, str]] = [(Path.cwd() / "tasks", "./tasks")]
    for env in (EXPERIMENT_PATH_ENV, LEGACY_EXPERIMENT_PATH_ENV):
        dirs += [(Path(p), f"${env}") for p in os.environ.get(env, "").split(os.pathsep) if p]
    dirs.append((tasks_dir(), "shipped"))
    out: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for d, origin in dirs:
        if not d.is_dir():
            continue
        key = d.resolve()
        if key in seen:
            continue
        seen.add(key)
        out.append((d, origin if key != tasks_dir().resolve() else "shipped"))
    return out
