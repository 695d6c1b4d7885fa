"""Templates behind ``subbench plugin new``: a plugin distribution that installs and passes its test as created.

Templates are plain files with ``$placeholders`` (:class:`string.Template`), so they read
like the files they become; ``package/`` becomes the plugin's import package.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from subbench.errors import SubbenchError

TEMPLATES = Path(__file__).resolve().parent
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def names(name: str) -> dict[str, str]:
    """Distribution, import package, entry-point and component names derived from NAME."""
    short = name[len("subbench-"):] if name.startswith("subbench-") else name
    if not NAME_RE.match(short):
        raise SubbenchError(
            f"Plugin name '{name}' must be lower-case letters, digits and single dashes, starting with a letter (e.g. my-model)."
        )
    return {
        "dist": f"subbench-{short}",
        "package": "subbench_" + short.replace("-", "_"),
        "plugin": short,
        "component": short,
    }


def scaffold(name: str, kind: str, directory: Path) -> Path:
    """Write the plugin into ``directory/subbench-NAME`` and return that folder."""
    from subbench import __version__

    source = TEMPLATES / kind
    if not source.is_dir():
        known = ", ".join(sorted(p.name for p in TEMPLATES.iterdir() if p.is_dir() and not p.name.startswith("_")))
        raise SubbenchError(f"No plugin template for kind '{kind}'; choose one of: {known}.")
    values = names(name)
    values["subbench_version"] = __version__
    target = Path(directory) / values["dist"]
    if target.exists():
        raise SubbenchError(f"{target} already exists; pick another name or --dir.")
    for src in sorted(p for p in source.rglob("*") if p.is_file() and p.suffix == ".tmpl"):
        rel = src.relative_to(source).with_suffix("")
        parts = [values["package"] if part == "package" else part for part in rel.parts]
        dest = target.joinpath(*parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(string.Template(src.read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
    return target
