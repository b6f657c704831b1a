"""`harness cache list|size|prune`: what the response cache holds, per model, and removing the stale part.

The cache (store/cache.py) keys every entry by a model fingerprint, so entries of models that changed
are never read again; they only take space. `prune` deletes by age (--older-than DAYS since an entry was
last used: read or written, see the cache's last_used), by model (--model FINGERPRINT prefix) and by size
(--max-size GB: least recently used first until the entries fit), in one transaction, then checkpoints
the WAL and VACUUMs so the file shrinks. Another run writing the same cache at the same time waits (busy
timeout) rather than failing. A cache written before last_used existed, and not opened by a run since,
is read as is: its entries' last use is their write time.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, InfrastructureError
from harness.store.cache import LAST_USED, TABLES, has_last_used

CACHE_FILE = "responses.sqlite"
GB = 1024**3


@dataclass(frozen=True)
class ModelUsage:
    fingerprint: str
    entries: int
    bytes: int  # stored value bytes (responses JSON + KD array blobs)
    oldest: float
    newest: float
    names: tuple[str, ...] = ()  # labels/specs of runs in a store that used this fingerprint
    last_used: float = 0.0  # the latest read or write of any of its entries


def _last_used(db: sqlite3.Connection, table: str) -> str:
    """SQL for an entry's last use: its write time in a cache that predates the column."""
    return LAST_USED if has_last_used(db, table) else "created"


def _open(cache_dir: Path) -> sqlite3.Connection:
    path = Path(cache_dir) / CACHE_FILE
    if not path.exists():
        raise HarnessError(f"no response cache at {path}: pass --cache-dir (the compare's --cache-dir)")
    try:
        db = sqlite3.connect(str(path), timeout=60.0, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 60000")
        db.execute("SELECT COUNT(*) FROM responses").fetchone()
    except sqlite3.DatabaseError as exc:
        raise InfrastructureError(f"the response cache {path} cannot be read: {exc}") from exc
    return db


def file_bytes(cache_dir: Path) -> int:
    """The cache's size on disk: the database, its WAL and shared-memory files."""
    base = Path(cache_dir) / CACHE_FILE
    return sum(p.stat().st_size for p in (base, Path(f"{base}-wal"), Path(f"{base}-shm")) if p.exists())


def _store_names(store: Path | None) -> dict[str, set[str]]:
    if store is None or not (Path(store) / "index.sqlite").exists():
        return {}
    names: dict[str, set[str]] = {}
    with sqlite3.connect(str(Path(store) / "index.sqlite"), timeout=60.0) as db:
        for fingerprint, label, spec in db.execute("SELECT fingerprint, label, spec FROM run_models"):
            if fingerprint:
                names.setdefault(str(fingerprint), set()).add(f"{label} ({spec})")
    return names


def usage(cache_dir: Path, *, model: str | None = None, store: Path | None = None) -> list[ModelUsage]:
    """Entries and bytes per model fingerprint, largest first."""
    db = _open(cache_dir)
    totals: dict[str, list[float]] = {}
    where, args = ("WHERE model LIKE ?", [f"{model}%"]) if model else ("", [])
    for table in TABLES:
        query = (
            f"SELECT model, COUNT(*), SUM(LENGTH(value)), MIN(created), MAX(created), "
            f"MAX({_last_used(db, table)}) FROM {table} {where} GROUP BY model"
        )
        for fingerprint, count, size, oldest, newest, used in db.execute(query, args):
            row = totals.setdefault(str(fingerprint), [0, 0, float("inf"), 0.0, 0.0])
            row[0] += count
            row[1] += size or 0
            row[2] = min(row[2], oldest)
            row[3] = max(row[3], newest)
            row[4] = max(row[4], used or 0.0)
    db.close()
    names = _store_names(store)
    out = [
        ModelUsage(fp, int(n), int(size), oldest, newest, tuple(sorted(names.get(fp, ()))), used)
        for fp, (n, size, oldest, newest, used) in totals.items()
    ]
    return sorted(out, key=lambda u: -u.bytes)


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    bytes_before: int
    bytes_after: int


def prune(
    cache_dir: Path,
    *,
    older_than_days: float | None = None,
    model: str | None = None,
    max_size_gb: float | None = None,
    vacuum: bool = True,
) -> PruneResult:
    """Delete entries not used for N days, of one model, and/or the least recently used until the values
    fit max_size_gb."""
    if older_than_days is None and model is None and max_size_gb is None:
        raise HarnessError("cache prune needs --older-than DAYS, --model FINGERPRINT or --max-size GB")
    if (older_than_days is not None and older_than_days < 0) or (max_size_gb is not None and max_size_gb < 0):
        raise HarnessError("--older-than and --max-size must be >= 0")
    before = file_bytes(cache_dir)
    db = _open(cache_dir)
    deleted = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        for table in TABLES:
            if older_than_days is not None:
                cutoff = time.time() - older_than_days * 86400
                query = f"DELETE FROM {table} WHERE {_last_used(db, table)} < ?"
                deleted += db.execute(query, (cutoff,)).rowcount
            if model is not None:
                deleted += db.execute(f"DELETE FROM {table} WHERE model LIKE ?", (f"{model}%",)).rowcount
        if max_size_gb is not None:
            deleted += _shrink_to(db, int(max_size_gb * GB))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if vacuum and deleted:
        db.execute("VACUUM")  # in WAL mode the rebuilt file goes through the WAL: checkpoint it away
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return PruneResult(deleted, before, file_bytes(cache_dir))


def _shrink_to(db: sqlite3.Connection, limit: int) -> int:
    """Delete the least recently used entries (both tables) until the stored values total <= limit."""
    total = sum(
        int(db.execute(f"SELECT COALESCE(SUM(LENGTH(value)), 0) FROM {t}").fetchone()[0]) for t in TABLES
    )
    if total <= limit:
        return 0
    used = {t: _last_used(db, t) for t in TABLES}
    rows = db.execute(
        f"SELECT 'responses', key, LENGTH(value), {used['responses']} AS used FROM responses "
        f"UNION ALL SELECT 'blobs', key, LENGTH(value), {used['blobs']} FROM blobs ORDER BY used, key"
    ).fetchall()
    doomed: dict[str, list[str]] = {t: [] for t in TABLES}
    for table, key, size, _ in rows:
        if total <= limit:
            break
        doomed[table].append(key)
        total -= int(size or 0)
    for table, keys in doomed.items():
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            db.execute(f"DELETE FROM {table} WHERE key IN ({','.join('?' * len(chunk))})", chunk)
    return sum(len(k) for k in doomed.values())


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def _day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def _minute(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def cache_command(args: argparse.Namespace) -> int:
    """The `harness cache` subcommands."""
    from harness.config import default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    if args.cache_command == "size":
        rows = usage(cache_dir)
        values = sum(u.bytes for u in rows)
        on_disk = _human(file_bytes(cache_dir))
        entries = sum(u.entries for u in rows)
        print(f"{cache_dir / CACHE_FILE}: {on_disk} on disk, {_human(values)} of values, {entries} entries, "
              f"{len(rows)} models")  # fmt: skip
    elif args.cache_command == "list":
        rows = usage(cache_dir, model=args.model, store=args.store)
        print(f"{'fingerprint':18s} {'entries':>8s} {'size':>10s} {'oldest':10s} {'newest':10s} "
              f"{'last used':16s} models")  # fmt: skip
        for u in rows:
            print(f"{u.fingerprint[:16]:18s} {u.entries:8d} {_human(u.bytes):>10s} {_day(u.oldest):10s} "
                  f"{_day(u.newest):10s} {_minute(u.last_used):16s} {'; '.join(u.names) or '-'}")  # fmt: skip
    else:
        result = prune(
            cache_dir, older_than_days=args.older_than, model=args.model, max_size_gb=args.max_size
        )
        print(
            f"pruned {result.deleted} entries: {_human(result.bytes_before)} -> {_human(result.bytes_after)}"
        )
    return 0
