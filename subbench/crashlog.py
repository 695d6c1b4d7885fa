"""Unexpected exceptions as one line, with the full traceback kept in a log file.

A plugin's bug (or ours) should not bury the user in 50 lines of traceback, nor lose them:
the line names who failed and where the traceback went. ``SUBBENCH_DEBUG=1`` keeps the raw
traceback instead.
"""

from __future__ import annotations

import os
import re
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

from subbench.errors import SubbenchError


def debug() -> bool:
    return os.environ.get("SUBBENCH_DEBUG", "") not in ("", "0")


def write_log(workdir: Path, exc: BaseException, header: str = "") -> Path:
    """Write ``exc``'s traceback to ``WORKDIR/logs/<timestamp>-<pid>.log``; return its path."""
    logs = Path(workdir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    with open(path, "a", encoding="utf-8") as f:
        f.write((header + "\n" if header else "") + text)
    return path.resolve()


def one_line(exc: BaseException, limit: int = 300) -> str:
    msg = re.sub(r"\s+", " ", str(exc)).strip()
    if len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def culprit(exc: BaseException, components: Iterable[Any]) -> Any | None:
    """The innermost component whose method is on ``exc``'s traceback (a judge inside a trait: the judge)."""
    by_id = {id(c): c for c in components}
    found = None
    tb = exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if obj is not None and id(obj) in by_id:
            found = by_id[id(obj)]
        tb = tb.tb_next
    return found


def component_failure(exc: BaseException, stage: str, label: str, workdir: Path, components: Iterable[Any]) -> SubbenchError:
    """The one-line error for a component that raised while a stage ran."""
    comp = culprit(exc, components)
    if comp is not None:
        who = f"{getattr(comp, 'kind', 'component')} '{comp.name}' (plugin {getattr(comp, 'plugin', None) or '?'})"
    else:
        who = "a component"
    log = write_log(workdir, exc, header=f"stage {stage}: {label}; {who}")
    return SubbenchError(f"The {stage} stage ({label}) failed in {who}: {one_line(exc)}. "
                         f"Full traceback in {log} (SUBBENCH_DEBUG=1 prints it).")
