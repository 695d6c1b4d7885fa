"""Run-wide settings handed to every component."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


def env_int(name: str, default: int, low: int = 1, high: int = 1024) -> int:
    """A whole-number environment setting; a bad value is a one-line ConfigError, not a traceback."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        from subbench.errors import ConfigError

        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {raw!r}; fix or unset it.")
    return value


def env_threads() -> int:
    """Torch threads per process: $SUBBENCH_THREADS, else 1."""
    return env_int("SUBBENCH_THREADS", 1)


@dataclass
class Context:
    workdir: Path
    device: str = "cpu"
    quiet: bool = False
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def progress(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it"):
        """A tqdm bar on stderr (disabled with --quiet)."""
        from tqdm.auto import tqdm

        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            disable=self.quiet,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def setup_torch(self) -> None:
        """Thread count and denormal flushing that keep CPU runs fast (see docs/architecture.md)."""
        import torch

        threads = self.threads or env_threads()
        torch.set_num_threads(max(1, threads))
        torch.set_flush_denormal(True)
        # CPU kernels are deterministic for a fixed thread count; this makes any that is not say so.
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Library progress bars (weight shards, dataset maps) would drown ours.
        try:
            import datasets
            import transformers

            transformers.utils.logging.disable_progress_bar()
            transformers.utils.logging.set_verbosity_error()
            datasets.utils.logging.disable_progress_bar()
        except ImportError:  # pragma: no cover
            pass
