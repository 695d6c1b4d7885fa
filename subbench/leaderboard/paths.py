"""Paths built from entry or experiment content, kept under their root.

An entry comes from a stranger: its experiment name, cell id or family could be
``../../x`` or ``/abs/x``, and a resealed entry still validates. Every path the
leaderboard builds from such a field goes through :func:`safe_join`, which makes each part a
plain file name and then checks that the resolved result (symbolic links followed) is still
inside the root, so a crafted field or a planted link cannot write elsewhere.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from subbench.errors import SubbenchError

MAX_PART = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@\[\]-]+")


def slug(part: object) -> str:
    """A single, visible file-name component: unsafe runs become '_', no leading dots, bounded length.

    Names that are already safe come back unchanged, so ordinary entries keep their names.
    A long name is cut and suffixed with a hash of the original, so two long names stay apart.
    """
    text = str(part)
    out = re.sub(r"^[._]+", "", _UNSAFE.sub("_", text)).rstrip("_") or "_"
    if len(out) > MAX_PART:
        out = out[: MAX_PART - 13] + "-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return out


def inside(root: Path, path: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


def safe_join(root: str | Path, *parts: object, suffix: str = "") -> Path:
    """``root / slug(part) / ...`` (+ ``suffix`` on the last part); refuses to leave ``root``."""
    if not parts:
        raise ValueError("safe_join needs at least one part")
    names = [slug(p) for p in parts]
    names[-1] += suffix
    path = Path(root).joinpath(*names)
    if not inside(root, path):
        raise SubbenchError(f"{path} would lie outside {root} (a symbolic link under it points elsewhere); "
                            f"remove the link and try again.")
    return path
