"""Torch side of the MLP auxiliary-logit reference suite (Cloud et al. 2025, the theory check).

Kept apart from :mod:`subbench.default_plugins.mlp` so the plugin module stays light:
the plugin imports :mod:`subbench.mlp.core` only inside component methods.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS = "model.pt"
CONFIG = "config.json"


def read_config(path: Path) -> dict[str, Any] | None:
    """The architecture written next to an mlp-digits model (None when ``path`` holds none)."""
    cfg = Path(path) / CONFIG
    return json.loads(cfg.read_text()) if cfg.is_file() else None
