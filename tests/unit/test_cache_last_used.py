"""The response cache's last_used: reads touch rows cheaply, prune evicts by last use, old caches migrate."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from harness.store.cache import TOUCH_RESOLUTION, ResponseCache
from harness.store.cache_admin import prune, usage
from harness.suites.base import Response

DAY = 86400.0
FILE = "responses.sqlite"


def _age(cache_dir: Path, table: str, keys: list[str], days_ago: float) -> None:
    """Pretend the rows were written and last used `days_ago` days ago."""
    then = time.time() - days_ago * DAY
    with sqlite3.connect(cache_dir / FILE) as db:
        for key in keys:
            db.execute(f"UPDATE {table} SET created = ?1, last_used = ?1 WHERE key = ?2", (then, key))


def _last_used(cache_dir: Path, table: str) -> dict[str, float]:
    with sqlite3.connect(cache_dir / FILE) as db:
        return dict(db.execute(f"SELECT key, last_used FROM {table}").fetchall())


def _responses(cache_dir: Path, n: int, size: int = 1000) -> list[str]:
    keys = [f"r{i}" for i in range(n)]
    cache = ResponseCache(cache_dir / FILE)
    cache.put_many("m" * 16, [(k, Response(text="x" * size)) for k in keys])
    cache.close()
    return keys


def test_a_row_written_long_ago_but_read_recently_survives_older_than(tmp_path: Path) -> None:
    keys = _responses(tmp_path, 10)
    cache = ResponseCache(tmp_path / FILE)
    cache.put_arrays_many("m" * 16, [("old-blob", {"v": np.arange(4)}), ("unread-blob", {"v": np.arange(3)})])
    cache.close()
    _age(tmp_path, "responses", keys, 40)
    _age(tmp_path, "blobs", ["old-blob", "unread-blob"], 40)
    cache = ResponseCache(tmp_path / FILE)
    assert set(cache.get_many(keys[:3] + ["absent"])) == set(keys[:3])
    touched = _last_used(tmp_path, "responses")  # get_many touched its rows at once, in one UPDATE
    assert all(abs(touched[k] - time.time()) < 60 for k in keys[:3])
    assert all(touched[k] < time.time() - 39 * DAY for k in keys[3:])
    arrays = cache.get_arrays("old-blob")
    assert arrays is not None and arrays["v"].tolist() == [0, 1, 2, 3]
    assert _last_used(tmp_path, "blobs")["old-blob"] < time.time() - 39 * DAY
    cache.close()  # get_arrays' touches are queued for the next write or close
    assert abs(_last_used(tmp_path, "blobs")["old-blob"] - time.time()) < 60
    with sqlite3.connect(tmp_path / FILE) as db:  # the write time is kept
        assert (
            db.execute("SELECT created FROM responses WHERE key = 'r0'").fetchone()[0]
            < time.time() - 39 * DAY
        )
    result = prune(tmp_path, older_than_days=30)
    assert result.deleted == 7 + 1
    assert sorted(_last_used(tmp_path, "responses")) == keys[:3]
    assert list(_last_used(tmp_path, "blobs")) == ["old-blob"]


def test_recent_reads_do_not_write(tmp_path: Path) -> None:
    """A row used within TOUCH_RESOLUTION is not touched again: repeated reads cost no write."""
    keys = _responses(tmp_path, 3)
    before = _last_used(tmp_path, "responses")
    cache = ResponseCache(tmp_path / FILE)
    for _ in range(3):
        assert len(cache.get_many(keys)) == 3
    cache.close()
    assert _last_used(tmp_path, "responses") == before and TOUCH_RESOLUTION <= DAY


def test_max_size_evicts_the_least_recently_used_first(tmp_path: Path) -> None:
    """Ten rows of equal size; written in key order but last used in another order (and both tables)."""
    keys = _responses(tmp_path, 10)
    cache = ResponseCache(tmp_path / FILE)
    cache.put_arrays_many("m" * 16, [("blob", {"v": np.zeros(10)})])
    cache.close()
    order = [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]  # least recently used first: r3 used 50 days ago, r4 41
    for rank, index in enumerate(order):
        _age(tmp_path, "responses", [keys[index]], 50 - rank)
        with sqlite3.connect(tmp_path / FILE) as db:  # written in key order, oldest first
            db.execute(
                "UPDATE responses SET created = ? WHERE key = ?",
                (time.time() - 60 * DAY + index, keys[index]),
            )
    _age(tmp_path, "blobs", ["blob"], 45.5)  # between r5 (45 days) and r1 (46)
    cache = ResponseCache(tmp_path / FILE)
    cache.get_many(["r3"])  # the least recently used becomes the most recently used
    cache.close()
    with sqlite3.connect(tmp_path / FILE) as db:
        sizes = dict(db.execute("SELECT key, LENGTH(value) FROM responses").fetchall())
    keep = sum(sizes.values()) - sum(sizes[k] for k in ("r7", "r0", "r9", "r1"))  # and not the blob
    result = prune(tmp_path, max_size_gb=keep / 1024**3)
    assert result.deleted == 5
    assert sorted(_last_used(tmp_path, "responses")) == ["r2", "r3", "r4", "r5", "r6", "r8"]
    assert _last_used(tmp_path, "blobs") == {}
    rows = usage(tmp_path)
    assert rows[0].entries == 6 and abs(rows[0].last_used - time.time()) < 60  # r3, read just now


def _old_schema_cache(path: Path) -> None:
    """A cache as written before last_used existed: four columns."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, model TEXT, value TEXT, created REAL)")
        db.execute("CREATE TABLE blobs (key TEXT PRIMARY KEY, model TEXT, value BLOB, created REAL)")
        old = time.time() - 40 * DAY
        for i in range(4):
            value = json.dumps(asdict(Response(text=f"old {i}", token_ids=(i,), finish_reason="stop")))
            db.execute("INSERT INTO responses VALUES (?, ?, ?, ?)", (f"k{i}", "f" * 16, value, old))
        db.execute("INSERT INTO blobs VALUES (?, ?, ?, ?)", ("meta", "f" * 16, b'{"a": 1}', old))


def test_an_old_schema_cache_is_migrated_and_still_readable(tmp_path: Path) -> None:
    _old_schema_cache(tmp_path / FILE)
    (listed,) = usage(tmp_path)  # `cache list` reads an unmigrated cache: last use = write time
    assert listed.entries == 5 and listed.last_used == listed.newest < time.time() - 39 * DAY
    cache = ResponseCache(tmp_path / FILE)
    with sqlite3.connect(tmp_path / FILE) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(responses)")]
        assert columns == ["key", "model", "value", "created", "last_used"]
        assert db.execute("SELECT COUNT(*) FROM responses WHERE last_used IS NULL").fetchone()[0] == 4
    assert cache.get_many(["k1", "k9"]) == {
        "k1": Response(text="old 1", token_ids=(1,), finish_reason="stop")
    }
    assert cache.get_json("meta") == {"a": 1}
    cache.put_many("g" * 16, [("new", Response(text="new"))])  # writes name their columns
    cache.close()
    ResponseCache(tmp_path / FILE).close()  # a second open finds the column and leaves it
    (old, new) = sorted(usage(tmp_path), key=lambda u: u.fingerprint)
    assert old.entries == 5 and abs(old.last_used - time.time()) < 60
    assert prune(tmp_path, older_than_days=30).deleted == 3  # k0, k2, k3: never read, written 40 days ago
    cache = ResponseCache(tmp_path / FILE)
    assert set(cache.get_many(["k0", "k1", "k2", "k3", "new"])) == {"k1", "new"}
    cache.close()


def test_a_locked_cache_still_serves_reads(tmp_path: Path) -> None:
    """Another run holding the write lock past the busy timeout: the read returns, its touch is dropped."""
    keys = _responses(tmp_path, 2)
    _age(tmp_path, "responses", keys, 10)
    cache = ResponseCache(tmp_path / FILE)
    cache._db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(tmp_path / FILE, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert len(cache.get_many(keys)) == 2
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not cache._db.in_transaction
    cache.close()
    assert all(t < time.time() - 9 * DAY for t in _last_used(tmp_path, "responses").values())
