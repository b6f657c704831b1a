"""On-disk response cache (SQLite, WAL): a killed run resumes and redoes nothing already committed.

Keys are SHA-256 digests of (model fingerprint, request) so a changed model never reuses stale
answers. Writers commit chunk by chunk; each commit is one transaction, so a kill loses at most the
chunk in flight. Array results (KD divergences) are stored as compressed .npz blobs.

Every row carries `last_used` (epoch seconds), so `harness cache prune` evicts what runs no longer
read rather than what was written long ago. Reads must stay cheap and several runs share the file, so
a read never writes per row: the rows' last_used comes back with their values, and only rows last used
more than TOUCH_RESOLUTION ago are touched, in one batched UPDATE per get_many/get_json call; the
single-key get_arrays (called in loops) queues its touches for the next write transaction, the next
batched read or close(). A touch that cannot be written (the file is locked past the busy timeout, or
read-only) is dropped: last use is a hint for pruning, never a reason to fail a run. Caches written
before the column existed get it with ALTER TABLE (cheap: no row is rewritten); their rows read as
last used when written (COALESCE(last_used, created)) until a run reads them.
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

TABLES = ("responses", "blobs")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, value TEXT, created REAL,
                                      last_used REAL);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, model TEXT, value BLOB, created REAL, last_used REAL);
"""
LAST_USED = "COALESCE(last_used, created)"  # rows of a migrated cache not read since: their write time
TOUCH_RESOLUTION = 3600.0  # seconds; pruning works in days, so an hour's precision saves most writes
_PENDING_MAX = 1000  # queued get_arrays touches written at once


def has_last_used(db: sqlite3.Connection, table: str) -> bool:
    return any(row[1] == "last_used" for row in db.execute(f"PRAGMA table_info({table})"))


def add_last_used(db: sqlite3.Connection) -> None:
    """Add the last_used column to a cache written before it existed (another process may race us:
    the check is repeated under the write lock)."""
    if all(has_last_used(db, t) for t in TABLES):
        return
    with _Transaction(db):
        for table in TABLES:
            if not has_last_used(db, table):
                db.execute(f"ALTER TABLE {table} ADD COLUMN last_used REAL")


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
        add_last_used(self._db)
        self._pending: dict[str, set[str]] = {t: set() for t in TABLES}  # keys read, not yet touched

    def get_many(self, keys: Iterable[str]) -> dict[str, Response]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Response] = {}
        stale = time.time() - TOUCH_RESOLUTION
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, value, {LAST_USED} FROM responses WHERE key IN ({marks})"
            for key, value, used in self._db.execute(query, chunk):
                data = json.loads(value)
                data["token_ids"] = tuple(data.get("token_ids", ()))
                found[key] = Response(**data)
                if used is None or used < stale:
                    self._pending["responses"].add(key)
        self._flush_touches()
        return found

    def put_many(self, model: str, items: Iterable[tuple[str, Response]]) -> None:
        now = time.time()
        rows = [(key, model, json.dumps(asdict(response)), now, now) for key, response in items]
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO responses (key, model, value, created, last_used) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            self._write_touches(now)

    def get_arrays(self, key: str) -> dict[str, np.ndarray] | None:
        row = self._read_blob(key)
        if row is None:
            return None
        if len(self._pending["blobs"]) >= _PENDING_MAX:
            self._flush_touches()
        with np.load(io.BytesIO(row)) as data:
            return {name: data[name] for name in data.files}

    def _read_blob(self, key: str) -> bytes | None:
        """The blob's value; its key is queued for a touch when last used before TOUCH_RESOLUTION."""
        query = f"SELECT value, {LAST_USED} FROM blobs WHERE key = ?"
        row = self._db.execute(query, (key,)).fetchone()
        if row is None:
            return None
        if row[1] is None or row[1] < time.time() - TOUCH_RESOLUTION:
            self._pending["blobs"].add(key)
        return bytes(row[0])

    def put_arrays_many(self, model: str, items: Iterable[tuple[str, dict[str, np.ndarray]]]) -> None:
        now = time.time()
        rows = []
        for key, arrays in items:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
            rows.append((key, model, buffer.getvalue(), now, now))
        self._put_blobs(rows)

    def get_json(self, key: str) -> Any:
        """A small JSON value stored with `put_json` (None when absent). Touched at once: it is read once
        per model load, by caches that may never be closed (a lazy backend's)."""
        row = self._read_blob(key)
        self._flush_touches()
        return None if row is None else json.loads(row.decode("utf-8"))

    def put_json(self, model: str, key: str, value: Any) -> None:
        data = json.dumps(value, sort_keys=True).encode("utf-8")
        now = time.time()
        self._put_blobs([(key, model, data, now, now)])

    def _put_blobs(self, rows: list[tuple[str, str, bytes, float, float]]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO blobs (key, model, value, created, last_used) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            self._write_touches(rows[0][3] if rows else time.time())

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self._flush_touches()
        self._db.close()

    def _write_touches(self, now: float) -> None:
        """Set last_used of the queued keys (inside the caller's transaction), 500 keys per UPDATE."""
        for table, keys in self._pending.items():
            queued = list(keys)
            for start in range(0, len(queued), 500):
                chunk = queued[start : start + 500]
                marks = ",".join("?" * len(chunk))
                self._db.execute(f"UPDATE {table} SET last_used = ? WHERE key IN ({marks})", [now, *chunk])
            keys.clear()

    def _flush_touches(self) -> None:
        """Write the queued touches in a transaction of their own (none when nothing is queued)."""
        if not any(self._pending.values()):
            return
        try:
            with self._transaction():
                self._write_touches(time.time())
        except sqlite3.Error:  # locked past the busy timeout or read-only: drop the hint, keep the run
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            for keys in self._pending.values():
                keys.clear()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
