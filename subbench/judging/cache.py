"""A persistent cache of endpoint replies, so re-running a judged evaluation costs no requests.

The key is the sha256 of (base_url, model, messages, sampling parameters) in canonical
JSON; the API key never takes part and is never stored. SQLite gives atomic, concurrent-safe
writes from the client's worker threads and from several processes sharing a work dir.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from subbench.hashing import canonical_json, sha256_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    base_url TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    reply TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def request_key(base_url: str, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    return sha256_text(canonical_json({"base_url": base_url.rstrip("/"), "model": model,
                                       "messages": messages, "params": params}))


class ResponseCache:
    """Replies by request key, in ``<dir>/replies.sqlite``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "replies.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            return row[0]

    def put(self, key: str, base_url: str, model: str, request: dict[str, Any], reply: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies (key, base_url, model, request, reply, created) VALUES (?, ?, ?, ?, ?, ?)",
                (key, base_url, model, canonical_json(request), reply, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
