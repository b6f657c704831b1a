"""On-disk response cache (SQLite, WAL): a killed run resumes and redoes nothing already committed.

Keys are SHA-256 digests of (model fingerprint, request) so a changed model never reuses stale
answers. Writers commit chunk by chunk; each commit is one transaction, so a kill loses at most the
chunk in flight. Array results (KD divergences) are stored as compressed .npz blobs.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from harness.suites.base import Request, Response

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, value TEXT, created REAL);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, model TEXT, value BLOB, created REAL);
"""


def request_key(model_fingerprint: str, request: Request) -> str:
    payload = {
        "model": model_fingerprint,
        "kind": request.kind,
        "prompt": request.prompt,
        "continuation": request.continuation,
        "params": request.params.key() if request.params else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def blob_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class ResponseCache:
    """A SQLite file shared by runs; safe for several processes (WAL, busy timeout)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def get_many(self, keys: Iterable[str]) -> dict[str, Response]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Response] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk)
            for key, value in rows:
                data = json.loads(value)
                data["token_ids"] = tuple(data.get("token_ids", ()))
                found[key] = Response(**data)
        return found

    def put_many(self, model: str, items: Iterable[tuple[str, Response]]) -> None:
        now = time.time()
        rows = [(key, model, json.dumps(asdict(response)), now) for key, response in items]
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)", rows)

    def get_arrays(self, key: str) -> dict[str, np.ndarray] | None:
        row = self._db.execute("SELECT value FROM blobs WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        with np.load(io.BytesIO(row[0])) as data:
            return {name: data[name] for name in data.files}

    def put_arrays_many(self, model: str, items: Iterable[tuple[str, dict[str, np.ndarray]]]) -> None:
        now = time.time()
        rows = []
        for key, arrays in items:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
            rows.append((key, model, buffer.getvalue(), now))
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?)", rows)

    def get_json(self, key: str) -> Any:
        """A small JSON value stored with `put_json` (None when absent)."""
        row = self._db.execute("SELECT value FROM blobs WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(bytes(row[0]).decode("utf-8"))

    def put_json(self, model: str, key: str, value: Any) -> None:
        data = json.dumps(value, sort_keys=True).encode("utf-8")
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?)", (key, model, data, time.time())
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
