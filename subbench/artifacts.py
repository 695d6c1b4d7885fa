"""The artifact store: one directory per finished stage, keyed by the hash of its inputs.

A stage writes into a temporary directory beside its final place and is renamed into
place only when it has finished, with ``meta.json`` (its inputs, results and a manifest of
its files: size and sha256) written last. Several runs (and the worker processes of one
run) may share a store: producing a key holds an exclusive ``flock`` on
``.locks/<stage>-<key>.lock``, so a second producer waits and then reuses the first one's
artifact, and start-up cleanup removes only the ``.tmp-*`` directories whose producer is
gone. A finished artifact is checked before reuse (``meta.json`` complete, files the size
and, for small artifacts at once and for large ones before a stage that may load them,
the sha256 the manifest records); one that fails is moved to ``.quarantine/`` and rebuilt.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from subbench.errors import SubbenchError
from subbench.hashing import canonical_json, sha256_file, sha256_json

META = "meta.json"
LOCKS = ".locks"
QUARANTINE = ".quarantine"
#: Artifacts up to this size are hashed in full at lookup; larger ones before a stage runs.
VERIFY_MAX_BYTES = int(float(os.environ.get("SUBBENCH_VERIFY_MAX_MB", "64")) * (1 << 20))


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


def manifest(path: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file of an artifact (``meta.json`` aside)."""
    root = Path(path)
    out = {}
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if rel != META:
            out[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return out


def _legacy_sha256_matches(path: Path, recorded: str) -> bool:
    """Whether ``recorded`` is the hash of the artifact under one of the conventions used before manifests.

    Stages recorded the hash of the whole directory (:func:`sha256_dir`), of the weight files
    concatenated (``lm.handle.weights_sha256``) or of one file (weights, jsonl).
    """
    root = Path(path)
    files = sorted(q for q in root.rglob("*") if q.is_file() and q.relative_to(root).as_posix() != META)
    per_file = {p: sha256_file(p) for p in files}
    if recorded in per_file.values():
        return True
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        h.update(per_file[p].encode())
    if h.hexdigest() == recorded:
        return True
    weights = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin"))
    if weights:
        w = hashlib.sha256()
        for p in weights:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    w.update(block)
        if w.hexdigest() == recorded:
            return True
    return False


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


class Corrupt(Exception):
    """An artifact that failed a check; the message says which."""


class ArtifactStore:
    def __init__(self, root: Path, fresh: bool = False, clean: bool = True, log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.fresh = fresh
        self.started = time.time()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._refreshed: set[str] = set()
        self._verified: set[str] = set()
        self._pending: dict[str, tuple[str, str, dict[str, Any]]] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        if clean:
            self.clean_tmp()

    # -- locks and cleanup ---------------------------------------------------------
    def lock_path(self, stage: str, key: str) -> Path:
        return self.root / LOCKS / f"{stage}-{key}.lock"

    @contextlib.contextmanager
    def lock(self, stage: str, key: str, blocking: bool = True) -> Iterator[bool]:
        """Hold the producer lock of ``stage/key``; yields False when ``blocking=False`` and it is busy.

        Announces a wait, since the other producer may be a long pretraining run.
        """
        path = self.lock_path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                held = False
                if blocking:
                    self.log(f"[{stage}] {key} is being produced by another process; waiting for it ...")
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    held = True
            try:
                yield held
            finally:
                if held:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def clean_tmp(self) -> None:
        """Remove what dead producers left half-written; a live producer's temp dir stays.

        A temp dir is ``.tmp-<key>-<pid>`` (or ``.tmp-old-<key>-<pid>``) and its producer holds
        the key's lock for as long as the dir exists. The kernel drops a lock when its process
        dies, so a free lock means a dead producer, whatever the pid (it may have been reused,
        or belong to another host sharing the store).
        """
        if not self.root.exists():
            return
        for stage_dir in self.root.iterdir():
            if not stage_dir.is_dir() or stage_dir.name.startswith("."):
                continue
            for d in stage_dir.glob(".tmp-*"):
                parts = d.name[len(".tmp-"):].split("-")
                if parts and parts[0] == "old":
                    parts = parts[1:]
                if len(parts) < 2:
                    shutil.rmtree(d, ignore_errors=True)
                    continue
                with self.lock(stage_dir.name, parts[0], blocking=False) as held:
                    if held:
                        shutil.rmtree(d, ignore_errors=True)

    # -- keys and lookups ----------------------------------------------------------
    @staticmethod
    def key(inputs: dict[str, Any]) -> str:
        return sha256_json(inputs)[:16]

    def mark_refreshed(self, stage: str, key: str) -> None:
        """Record that ``stage/key`` was (re)computed in this run (by a worker process)."""
        self._refreshed.add(f"{stage}/{key}")

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def _read(self, stage: str, key: str, inputs: dict[str, Any]) -> Artifact | None:
        """The finished artifact if there is one; raises :class:`Corrupt` when it fails a cheap check."""
        path = self.path(stage, key)
        meta_file = path / META
        if not meta_file.exists():
            if path.exists() and any(path.iterdir()):
                raise Corrupt("it has no meta.json")
            return None
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise Corrupt(f"its meta.json is unreadable ({type(exc).__name__})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("result"), dict) or "inputs" not in meta:
            raise Corrupt("its meta.json is incomplete")
        if meta.get("stage") != stage or meta.get("key") != key or canonical_json(meta["inputs"]) != canonical_json(inputs):
            raise Corrupt("its meta.json belongs to other inputs")
        files = meta.get("files")
        if files is not None:
            if not isinstance(files, dict):
                raise Corrupt("its meta.json has no valid file manifest")
            total = 0
            for rel, rec in files.items():
                p = path / rel
                if not p.is_file():
                    raise Corrupt(f"{rel} is missing")
                if p.stat().st_size != rec.get("size"):
                    raise Corrupt(f"{rel} has {p.stat().st_size} bytes, not the {rec.get('size')} written")
                total += p.stat().st_size
            tag = f"{stage}/{key}"
            if tag not in self._verified:
                if total <= VERIFY_MAX_BYTES:
                    self._verify_hashes(path, files)
                    self._verified.add(tag)
                else:
                    self._pending[tag] = (stage, key, inputs)
        elif f"{stage}/{key}" not in self._verified:
            recorded = meta["result"].get("sha256")
            if isinstance(recorded, str) and len(recorded) == 64 and not _legacy_sha256_matches(path, recorded):
                raise Corrupt("its files do not match the sha256 recorded in meta.json")
            self._verified.add(f"{stage}/{key}")
        return Artifact(stage, key, path, meta, cached=True)

    @staticmethod
    def _verify_hashes(path: Path, files: dict[str, dict[str, Any]]) -> None:
        for rel, rec in files.items():
            if sha256_file(path / rel) != rec.get("sha256"):
                raise Corrupt(f"{rel} does not match its recorded sha256")

    def quarantine(self, stage: str, key: str, why: str) -> Path:
        """Move a failed artifact aside (kept for inspection) and say so in one line."""
        src = self.path(stage, key)
        dest = self.root / QUARANTINE / stage / f"{key}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dest)
        except FileNotFoundError:  # another process moved it first
            return dest
        self._verified.discard(f"{stage}/{key}")
        self.log(f"[{stage}] cached artifact {key} failed its check ({why}); moved to {dest} and rebuilding.")
        return dest

    def _checked(self, stage: str, key: str, inputs: dict[str, Any], locked: bool) -> Artifact | None:
        try:
            return self._read(stage, key, inputs)
        except Corrupt as exc:
            why = str(exc)
        if locked:
            self.quarantine(stage, key, why)
            return None
        with self.lock(stage, key):  # re-read under the lock: another process may have rebuilt it
            try:
                return self._read(stage, key, inputs)
            except Corrupt as exc:
                self.quarantine(stage, key, str(exc))
                return None

    def _reusable(self, stage: str, key: str, art: Artifact | None) -> Artifact | None:
        if art is None or not self.fresh or f"{stage}/{key}" in self._refreshed:
            return art
        try:  # --fresh: what another run of this moment produced counts as fresh
            if (art.path / META).stat().st_mtime >= self.started:
                self._refreshed.add(f"{stage}/{key}")
                return art
        except OSError:
            pass
        return None

    def lookup(self, stage: str, inputs: dict[str, Any]) -> Artifact | None:
        key = self.key(inputs)
        return self._reusable(stage, key, self._checked(stage, key, inputs, locked=False))

    def open(self, stage: str, key: str) -> Artifact:
        """The finished artifact ``stage/key`` that another process (an executor's worker, or its parent) checked."""
        path = self.path(stage, key)
        try:
            meta = json.loads((path / META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SubbenchError(f"The {stage} artifact {key} is missing from {self.root} ({exc}); "
                                "is the workdir on a filesystem every worker sees?") from None
        return Artifact(stage, key, path, meta, cached=True)

    def verify_pending(self) -> None:
        """Hash the large artifacts looked up so far, before a stage that may load them runs."""
        while self._pending:
            tag, (stage, key, inputs) = self._pending.popitem()
            path = self.path(stage, key)
            try:
                files = json.loads((path / META).read_text(encoding="utf-8"))["files"]
                self._verify_hashes(path, files)
            except (Corrupt, OSError, ValueError, KeyError, TypeError) as exc:
                with self.lock(stage, key, blocking=False) as held:
                    where = self.quarantine(stage, key, str(exc)) if held else path
                raise SubbenchError(
                    f"The cached {stage} artifact {key} is corrupted ({exc}) and was moved to {where}; "
                    "run the same command again to rebuild it.") from None
            self._verified.add(tag)

    # -- producing -----------------------------------------------------------------
    def produce(
        self, stage: str, inputs: dict[str, Any], fn: Callable[[Path], dict[str, Any]]
    ) -> Artifact:
        """Return the artifact for ``inputs``, running ``fn(tmp_dir) -> result`` if it is missing.

        ``cached`` on the result is True when the artifact was found, including one another
        process finished while this one waited for the key's lock.
        """
        found = self.lookup(stage, inputs)
        if found is not None:
            return found
        key = self.key(inputs)
        with self.lock(stage, key):
            found = self._reusable(stage, key, self._checked(stage, key, inputs, locked=True))
            if found is not None:
                return found
            return self._produce_locked(stage, key, inputs, fn)

    def _produce_locked(self, stage: str, key: str, inputs: dict[str, Any], fn: Callable[[Path], dict[str, Any]]) -> Artifact:
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
                "files": manifest(tmp),
            }
            (tmp / META).write_text(json.dumps(json.loads(canonical_json(meta)), indent=2, sort_keys=True))
            if final.exists():  # --fresh, or a leftover without meta.json: replace it
                old = final.parent / f".tmp-old-{key}-{os.getpid()}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._refreshed.add(f"{stage}/{key}")
        self._verified.add(f"{stage}/{key}")
        return Artifact(stage, key, final, meta, cached=False)
