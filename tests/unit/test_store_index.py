"""The run store: atomic commits, listing and tags, concurrent writers, full disks, and records that last."""

from __future__ import annotations

import errno
import json
import multiprocessing
import shutil
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.errors import HarnessError, InfrastructureError
from harness.regress import gate
from harness.store.index import RunStore, parse_since, resolve
from harness.store.record import COMPLETE_MARKER, SCHEMA_VERSION, RecordVersionWarning, read_record
from tests.unit.test_regress import make_record


def _record(tmp: Path, name: str, student: str = "student", n: int = 10) -> Path:
    return make_record(tmp / name, {"teacher": [1] * n, student: [1] * n})


def test_commit_list_show_tag_and_resolve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "store"
    with RunStore(root) as store:
        # explicit ids, so the prefix checks below cannot meet a chance collision of random suffixes
        first = store.commit(_record(tmp_path, "a"), run_id="20261128T010635Z-67f0aa11", tags=("nightly",))
        second = store.commit(_record(tmp_path, "b", student="other"), run_id="20261128T010635Z-67f0bb22")
        assert (first.path / COMPLETE_MARKER).exists() and (tmp_path / "a").exists()  # copied, not moved
        assert [r.run_id for r in store.runs()] == [first.run_id, second.run_id]  # by created, then commit
        assert [r.run_id for r in store.runs(model="other")] == [second.run_id]
        assert [r.run_id for r in store.runs(model="fp-other")] == [second.run_id]  # fingerprint prefix
        assert [r.run_id for r in store.runs(tag="nightly")] == [first.run_id]
        assert [r.run_id for r in store.runs(suite="arith")] == [first.run_id, second.run_id]
        assert store.runs(suite="nope") == [] and store.runs(since="2999-01-01") == []
        assert store.get(first.run_id).students == ["student"]
        store.tag(second.run_id, "nightly")  # a tag names one run: it moves
        assert store.resolve_id("nightly") == second.run_id
        assert store.resolve_id("latest") == second.run_id
        assert store.resolve_id("20261128T010635Z-67f0a") == first.run_id  # a unique prefix
        with pytest.raises(HarnessError, match="2 runs start with it"):
            store.resolve_id("20261128T010635Z-67f0")
        with pytest.raises(HarnessError, match="not in the store"):
            store.resolve_id("missing-tag")
        with pytest.raises(HarnessError, match="tag 'bad tag' is invalid"):
            store.tag(first.run_id, "bad tag")
    assert resolve(root, "nightly") == root / "runs" / second.run_id
    assert resolve(root, str(tmp_path / "a")) == tmp_path / "a"
    assert main(["runs", "list", "--store", str(root), "--tag", "nightly"]) == 0
    listed = capsys.readouterr().out
    assert second.run_id in listed and first.run_id not in listed
    assert main(["runs", "show", "nightly", "--store", str(root)]) == 0
    shown = capsys.readouterr().out
    assert "suite:    arith k=2: teacher 1.000, other 1.000" in shown
    assert main(["runs", "tag", first.run_id, "good", "--store", str(root)]) == 0
    assert main(["runs", "add", str(tmp_path / "a"), "--tag", "added", "--store", str(root)]) == 0
    assert len(RunStore(root).runs()) == 3


def test_parse_since() -> None:
    assert parse_since("2026-11-01") == "2026-11-01"
    assert parse_since("7d") < parse_since("1d")
    with pytest.raises(HarnessError, match="--since"):
        parse_since("last week")


def test_half_written_runs_are_never_listed_and_a_crash_after_the_rename_is_repaired(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = RunStore(root)
    done = store.commit(_record(tmp_path, "a"))
    shutil.copytree(tmp_path / "a", root / ".tmp" / "20990101T000000Z-deadbeef.x")  # mid-commit
    shutil.copytree(tmp_path / "a", root / ".staging" / "20990101T000000Z-cafecafe")  # mid-compare
    half = root / "runs" / "20990101T000000Z-0badf00d"
    shutil.copytree(tmp_path / "a", half)
    (half / COMPLETE_MARKER).unlink()  # renamed without its marker: cannot happen, but must not list
    assert [r.run_id for r in store.runs()] == [done.run_id]
    # a complete folder under runs/ that the index lacks: the process died between rename and index
    orphan = root / "runs" / "20990102T000000Z-0000abcd"
    shutil.copytree(tmp_path / "a", orphan)
    assert [r.run_id for r in store.runs()] == [done.run_id, orphan.name]
    # a folder removed by hand is not offered either
    shutil.rmtree(done.path)
    assert [r.run_id for r in store.runs()] == [orphan.name]


def _writer(root: str, src: str, worker: int, n: int) -> None:
    store = RunStore(Path(root))
    for i in range(n):
        entry = store.commit(Path(src), tags=(f"w{worker}",))
        store.tag(entry.run_id, "shared")
        if i % 2:
            store.set_verdict(entry.run_id, "pass", "x")
    store.close()


def test_concurrent_writers_do_not_corrupt_the_store(tmp_path: Path) -> None:
    src = _record(tmp_path, "a", n=200)
    root = tmp_path / "store"
    RunStore(root).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(root), str(src), w, 5)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = RunStore(root)
    runs = store.runs()
    assert len(runs) == 20 and len({r.run_id for r in runs}) == 20
    assert all(len(read_record(r.path).items) == 800 for r in runs)
    assert sorted(store.resolve_id(f"w{w}") for w in range(4)) == sorted(
        {r.run_id for r in runs if any(t.startswith("w") for t in r.tags)}
    )
    with sqlite3.connect(root / "index.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not list((root / ".tmp").iterdir())


def test_disk_full_during_commit_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    store = RunStore(root)
    kept = store.commit(_record(tmp_path, "a"), tags=("good",))
    before = (kept.path / "items.jsonl").read_bytes()
    real_copy = shutil.copyfileobj
    calls = {"n": 0}

    def full_disk(fin: Any, fout: Any, length: int = 0) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            fout.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_copy(fin, fout, length)

    monkeypatch.setattr(shutil, "copyfileobj", full_disk)
    with pytest.raises(InfrastructureError, match="No space left on device.*earlier runs are intact") as info:
        store.commit(_record(tmp_path, "b"))
    assert info.value.exit_code == 3
    assert [r.run_id for r in store.runs()] == [kept.run_id] and store.resolve_id("good") == kept.run_id
    assert (kept.path / "items.jsonl").read_bytes() == before
    assert not list((root / ".tmp").iterdir()) and len(list((root / "runs").iterdir())) == 1


_FSIZE_CHILD = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from harness.errors import InfrastructureError
from harness.store.index import RunStore
store = RunStore(Path(sys.argv[1]))
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    store.commit(Path(sys.argv[2]))
except InfrastructureError as exc:
    print("FAILED:", exc)
    sys.exit(3)
"""


def test_a_real_write_failure_from_the_os_leaves_the_store_intact(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse writes past 20 kB (EFBIG): a real failed write, no root needed."""
    root = tmp_path / "store"
    kept = RunStore(root).commit(_record(tmp_path, "small", n=5))
    big = _record(tmp_path, "big", n=400)
    assert (big / "items.jsonl").stat().st_size > 20000
    result = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(root), str(big)], capture_output=True, text=True
    )
    assert result.returncode == 3, result.stderr
    assert "File too large" in result.stdout and "nothing was committed" in result.stdout
    store = RunStore(root)
    assert [r.run_id for r in store.runs()] == [kept.run_id]
    assert not list((root / ".tmp").iterdir())
    assert len(read_record(kept.path).items) == 20


# -- records that last ---------------------------------------------------------------------------------
def _version0(run_dir: Path) -> Path:
    """A record as an early harness wrote it: no schema_version, gains as bare numbers, no headline."""
    run_dir.mkdir()
    manifest = {
        "harness_version": "0.0.1",
        "models": {"teacher": {"role": "teacher"}, "student": {"role": "student"}},
    }
    items = [
        {"suite": "arith", "variant": v, "item_id": f"i{i}", "model": m, "prompt": f"q{i}", "output": "x",
         "target": "y", "score": 1.0 if (m == "teacher" or i % 4) else 0.0}
        for v in ("k=0", "k=4", "k=16") for m in ("teacher", "student") for i in range(12)
    ]  # fmt: skip
    metrics = {
        "suites": {
            "arith": {
                "primary_metric": "exact_match",
                "baseline_variant": "k=0",
                "variants": {
                    v: {"teacher": {"score": 1.0}, "student": {"score": 0.75}} for v in ("k=0", "k=4", "k=16")
                },
                "gain": {"student": {"k=4": 0.0, "k=16": 0.0}},
            }
        }
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / COMPLETE_MARKER).write_text("")
    return run_dir


def test_an_old_record_is_migrated_on_read_and_gated(tmp_path: Path) -> None:
    old = read_record(_version0(tmp_path / "old"))
    assert old.migrated_from == 0 and old.schema_version == SCHEMA_VERSION
    summary = old.metrics["suites"]["arith"]
    assert summary["headline_variant"] == "k=16"  # natural order: 16 after 4
    assert (
        summary["gain"]["student"]["k=4"]["value"] == 0.0
        and "migrated" in summary["gain"]["student"]["k=4"]["note"]
    )
    assert old.items[0]["metrics"] == {} and old.items[0]["truncated"] is False
    assert (
        json.loads((tmp_path / "old" / "manifest.json").read_text()).get("schema_version") is None
    )  # not rewritten
    new = make_record(tmp_path / "new", {"teacher": [1] * 12, "student": [0] * 12})
    new_record = read_record(new)
    new_record.metrics["suites"]["arith"].update(headline_variant="k=16", primary_metric="exact_match")
    for item in new_record.items:
        item["variant"] = "k=16" if item["variant"] == "k=2" else item["variant"]
    verdict = gate(old, new_record)
    assert verdict.metrics[0].baseline == 0.75 and verdict.metrics[0].regressed


def test_a_newer_record_is_read_with_a_warning_and_keeps_unknown_keys(tmp_path: Path) -> None:
    run = make_record(tmp_path / "r", {"teacher": [1] * 4, "student": [1] * 4})
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 5
    manifest["from_the_future"] = {"x": 1}
    (run / "manifest.json").write_text(json.dumps(manifest))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["new_block"] = [1, 2]
    (run / "metrics.json").write_text(json.dumps(metrics))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = read_record(run)
    assert any(issubclass(w.category, RecordVersionWarning) and "newer" in str(w.message) for w in caught)
    assert record.manifest["from_the_future"] == {"x": 1} and record.metrics["new_block"] == [1, 2]
    assert record.migrated_from is None and len(record.items) == 16  # 2 models x 4 items x 2 variants


def test_a_damaged_record_is_a_one_line_error(tmp_path: Path) -> None:
    run = make_record(tmp_path / "r", {"teacher": [1], "student": [1]})
    (run / "manifest.json").write_text("[1, 2]")
    with pytest.raises(HarnessError, match="not a JSON object"):
        read_record(run)
    (run / "manifest.json").write_text('{"schema_version": "two"}')
    with pytest.raises(HarnessError, match="not a whole number"):
        read_record(run)
