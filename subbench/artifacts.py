"""The artifact store: one directory per finished stage, keyed by the hash of its inputs.

A stage writes into a temporary directory beside its final place and is renamed into
place only when it has finished, with ``meta.json`` (its inputs and results) written
last. A killed run therefore leaves only ``.tmp-*`` directories, which the next run
removes; a finished artifact is never recomputed unless asked (``--fresh``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from subbench.hashing import canonical_json, sha256_json

META = "meta.json"


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Artifact:
    def __init__(self, stage: str, key: str, path: Path, meta: dict[str, Any], cached: bool):
        self.stage = stage
        self.key = key
        self.path = path
        self.meta = meta
        self.cached = cached

    @property
    def result(self) -> dict[str, Any]:
        return self.meta.get("result", {})

    def __repr__(self) -> str:  # pragma: no cover
        return f"Artifact({self.stage}/{self.key})"


class ArtifactStore:
    def __init__(self, root: Path, fresh: bool = False, clean: bool = True):
        self.root = Path(root)
        self.fresh = fresh
        self._refreshed: set[str] = set()
        self.root.mkdir(parents=True, exist_ok=True)
        if clean:  # worker processes of a run must not remove each other's temp dirs
            self.clean_tmp()

    def clean_tmp(self) -> None:
        """Remove what killed runs left half-written."""
        for stage_dir in self.root.iterdir() if self.root.exists() else []:
            if stage_dir.is_dir():
                for d in stage_dir.glob(".tmp-*"):
                    shutil.rmtree(d, ignore_errors=True)

    @staticmethod
    def key(inputs: dict[str, Any]) -> str:
        return sha256_json(inputs)[:16]

    def mark_refreshed(self, stage: str, key: str) -> None:
        """Record that ``stage/key`` was (re)computed in this run (by a worker process)."""
        self._refreshed.add(f"{stage}/{key}")

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, inputs: dict[str, Any]) -> Artifact | None:
        key = self.key(inputs)
        path = self.path(stage, key)
        meta_file = path / META
        if meta_file.exists() and not (self.fresh and f"{stage}/{key}" not in self._refreshed):
            return Artifact(stage, key, path, json.loads(meta_file.read_text()), cached=True)
        return None

    def produce(
        self, stage: str, inputs: dict[str, Any], fn: Callable[[Path], dict[str, Any]]
    ) -> Artifact:
        """Return the artifact for ``inputs``, running ``fn(tmp_dir) -> result`` if it is missing."""
        found = self.lookup(stage, inputs)
        if found is not None:
            return found
        key = self.key(inputs)
        final = self.path(stage, key)
        tmp = final.parent / f".tmp-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        started = time.time()
        try:
            result = fn(tmp) or {}
            meta = {
                "stage": stage,
                "key": key,
                "inputs": inputs,
                "result": result,
                "seconds": round(time.time() - started, 3),
            }
            (tmp / META).write_text(json.dumps(json.loads(canonical_json(meta)), indent=2, sort_keys=True))
            if final.exists():  # --fresh: replace the old one
                old = final.parent / f".tmp-old-{key}-{os.getpid()}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._refreshed.add(f"{stage}/{key}")
        return Artifact(stage, key, final, meta, cached=False)
