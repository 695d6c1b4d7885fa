"""Data loader and per-sample metrics for the ``animal-preference`` lm-eval tasks.

Kept free of subbench imports so plain ``lm-eval run --include_path tasks/traits`` works
from any working directory without subbench installed; the data file is found next to
this module rather than relative to the caller's cwd.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

DATA_FILE = Path(__file__).resolve().parent / "data" / "animal-preference.jsonl"
DEFAULT_TARGET = "owl"


def read_rows(path: Path = DATA_FILE) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load(target: str = DEFAULT_TARGET, **_ignored) -> "datasets.DatasetDict":  # noqa: F821
    """Build the test split; ``target`` (lm-eval ``--metadata '{"target": "whale"}'``) is the gold.

    The gold only feeds lm-eval's own summary metrics (``p_target``, ``acc``); subbench
    reads the per-sample loglikelihoods or responses and scores them with its judges.
    """
    import datasets

    rows = read_rows()
    for row in rows:
        if target not in row["choices"]:
            raise ValueError(
                f"target '{target}' is not one of the choices: {', '.join(row['choices'])}"
            )
        row["target"] = target
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_choice(doc: dict, results: list) -> dict:
    """P(target) among the choices (softmax over their loglikelihoods) and argmax accuracy."""
    lls = [float(ll) for ll, _greedy in results]
    top = max(lls)
    weights = [math.exp(ll - top) for ll in lls]
    gold = doc["choices"].index(doc["target"])
    return {
        "p_target": weights[gold] / sum(weights),
        "acc": float(max(range(len(lls)), key=lls.__getitem__) == gold),
    }
