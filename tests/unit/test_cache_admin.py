"""`harness cache`: usage per model fingerprint, and pruning by age, model and size."""

from __future__ import annotations

import calendar
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.store.cache import ResponseCache
from harness.store.cache_admin import file_bytes, prune, usage
from harness.store.index import RunStore
from harness.suites.base import Response
from tests.unit.test_regress import make_record

DAY = 86400.0


def _fill(cache_dir: Path) -> None:
    """Model aaaa: 30 responses written (and last used) 40 days ago; model bbbb: 20 responses today and one
    1 MB blob."""
    cache = ResponseCache(cache_dir / "responses.sqlite")
    cache.put_many("aaaa" * 4, [(f"a{i}", Response(text="x" * 1000)) for i in range(30)])
    cache.put_many("bbbb" * 4, [(f"b{i}", Response(text="y" * 500)) for i in range(20)])
    rng = np.random.default_rng(0)
    cache.put_arrays_many("bbbb" * 4, [("blob", {"v": rng.random(131072)})])
    cache.close()
    with sqlite3.connect(cache_dir / "responses.sqlite") as db:
        db.execute(
            "UPDATE responses SET created = ?1, last_used = ?1 WHERE model = ?2",
            (time.time() - 40 * DAY, "aaaa" * 4),
        )


def test_usage_per_model(tmp_path: Path) -> None:
    _fill(tmp_path)
    rows = {u.fingerprint: u for u in usage(tmp_path)}
    assert rows["aaaa" * 4].entries == 30 and rows["bbbb" * 4].entries == 21
    assert rows["aaaa" * 4].bytes > 30 * 1000 and rows["bbbb" * 4].bytes > 1_000_000  # the blob dominates
    assert list(rows) == ["bbbb" * 4, "aaaa" * 4]  # largest first
    assert [u.fingerprint for u in usage(tmp_path, model="aaa")] == ["aaaa" * 4]


def test_prune_by_age_then_model(tmp_path: Path) -> None:
    _fill(tmp_path)
    result = prune(tmp_path, older_than_days=30)
    assert result.deleted == 30 and [u.fingerprint for u in usage(tmp_path)] == ["bbbb" * 4]
    result = prune(tmp_path, model="bbbb")
    assert result.deleted == 21 and usage(tmp_path) == []
    assert result.bytes_after < result.bytes_before and file_bytes(tmp_path) < 200_000  # VACUUM shrank it


def test_prune_to_a_size_removes_the_oldest_first(tmp_path: Path) -> None:
    _fill(tmp_path)
    limit_gb = 1_030_000 / 1024**3  # room for the blob, today's responses and part of last month's
    result = prune(tmp_path, max_size_gb=limit_gb)
    rows = {u.fingerprint: u for u in usage(tmp_path)}
    assert "bbbb" * 4 in rows and rows["bbbb" * 4].entries == 21
    assert 0 < rows["aaaa" * 4].entries < 30  # only as many old entries as needed went
    assert sum(u.bytes for u in rows.values()) <= 1_030_000
    assert result.deleted == 30 - rows["aaaa" * 4].entries
    assert prune(tmp_path, max_size_gb=10.0).deleted == 0


def test_cache_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(tmp_path / "cache")
    store = RunStore(tmp_path / "store")
    run = make_record(tmp_path / "r", {"teacher": [1], "student": [1]})
    store.commit(run)
    with sqlite3.connect(tmp_path / "store" / "index.sqlite") as db:
        db.execute("UPDATE run_models SET fingerprint = ? WHERE label = 'student'", ("aaaa" * 4,))
    assert (
        main(["cache", "list", "--cache-dir", str(tmp_path / "cache"), "--store", str(tmp_path / "store")])
        == 0
    )
    out = capsys.readouterr().out
    assert "aaaaaaaaaaaaaaaa" in out and "student (hf:/student)" in out
    header, *lines = out.splitlines()
    assert "last used" in header
    last_used = {}  # the "last used" column, to the minute
    for line in lines:
        stamp = " ".join(line.split()[6:8])
        last_used[line[:16]] = calendar.timegm(time.strptime(stamp, "%Y-%m-%d %H:%M"))
    assert abs(last_used["aaaaaaaaaaaaaaaa"] - (time.time() - 40 * DAY)) < 120
    assert abs(last_used["bbbbbbbbbbbbbbbb"] - time.time()) < 120
    assert main(["cache", "size", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "51 entries, 2 models" in capsys.readouterr().out
    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "cache"), "--older-than", "7"]) == 0
    assert "pruned 30 entries" in capsys.readouterr().out
    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "cache")]) == 2
    assert main(["cache", "size", "--cache-dir", str(tmp_path / "nope")]) == 2
