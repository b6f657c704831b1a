"""The run store: a folder of committed run records and an SQLite index over them.

Layout of STORE:
- `runs/<run_id>/`   one finished run record each (record.py's layout, plus report files and regress.json)
- `index.sqlite`     runs, their models, suites and tags (WAL journal, busy timeout: many processes)
- `.tmp/`            folders being committed (never listed); `.staging/<run_id>/` runs still being computed;
  `.pending/<key>.json` the run id a `harness run` of one config resumes after a kill; `.locks/` one lock
  file per run file, held while it runs.

Commit is atomic: the record is copied (or moved) into `.tmp/`, every file fsynced, then renamed into
`runs/` (one rename on one filesystem) and only then indexed in one transaction. A crash before the
rename leaves nothing listed; a crash between the rename and the index is repaired on the next listing
(a COMPLETE folder under runs/ that the index lacks is indexed). A failed write (a full disk) removes
what it wrote and leaves every earlier record as it was.

Names (default store, run ids, tags, --since) are in names.py, the durable copy in files.py, and the
plain-text views of `harness runs` in views.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, InfrastructureError
from harness.store.files import _copy_tree, _fsync_tree, _infra
from harness.store.names import _now, check_tag, default_store, new_run_id, parse_since
from harness.store.record import COMPLETE_MARKER, fsync_dir, read_record

INDEX_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, path TEXT NOT NULL, created TEXT, committed TEXT, harness_version TEXT,
    schema_version INTEGER, teacher TEXT, verdict TEXT, baseline TEXT, meta TEXT);
CREATE TABLE IF NOT EXISTS run_models (
    run_id TEXT NOT NULL, label TEXT NOT NULL, role TEXT, spec TEXT, fingerprint TEXT,
    PRIMARY KEY (run_id, label));
CREATE TABLE IF NOT EXISTS run_suites (
    run_id TEXT NOT NULL, suite TEXT NOT NULL, PRIMARY KEY (run_id, suite));
CREATE TABLE IF NOT EXISTS tags (tag TEXT PRIMARY KEY, run_id TEXT NOT NULL, tagged TEXT);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
"""


@dataclass(frozen=True)
class StoredRun:
    """One indexed run."""

    run_id: str
    path: Path
    created: str
    committed: str
    teacher: str
    models: tuple[tuple[str, str, str, str], ...]  # (label, role, spec, fingerprint)
    suites: tuple[str, ...]
    tags: tuple[str, ...]
    verdict: str | None
    baseline: str | None

    @property
    def students(self) -> list[str]:
        return [label for label, role, _, _ in self.models if role == "student"]


class RunStore:
    """Open (creating if needed) the store at `root`. Safe for several processes at once."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()
        try:
            for sub in ("runs", ".tmp", ".staging", ".pending", ".locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.root / "index.sqlite"), timeout=60.0, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 60000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)  # idempotent; executescript commits by itself
        except OSError as exc:
            raise InfrastructureError(
                f"cannot open the run store {self.root}: {exc.strerror or exc}"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise InfrastructureError(
                f"the run store index {self.root / 'index.sqlite'} is damaged: {exc}"
            ) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- paths ---------------------------------------------------------------------------------------
    def run_path(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def staging(self, run_id: str) -> Path:
        """Where a run computes before its commit (same filesystem as runs/, so commit is one rename)."""
        return self.root / ".staging" / run_id

    def is_committed(self, run_id: str) -> bool:
        return (self.run_path(run_id) / COMPLETE_MARKER).exists()

    # -- commit ----------------------------------------------------------------------------------------
    def commit(
        self,
        src: Path,
        *,
        run_id: str | None = None,
        tags: tuple[str, ...] = (),
        move: bool = False,
        verdict: str | None = None,
        baseline: str | None = None,
    ) -> StoredRun:
        """Add the finished run folder `src` (copied, or moved when `move`); returns its entry."""
        record = read_record(src)  # refuses a folder without COMPLETE
        for tag in tags:
            check_tag(tag)
        run_id = run_id or new_run_id()
        final = self.run_path(run_id)
        if final.exists():
            raise HarnessError(f"run {run_id} is already in the store {self.root}")
        tmp = self.root / ".tmp" / f"{run_id}.{uuid.uuid4().hex[:6]}"
        try:
            if move:
                os.replace(src, tmp)
                _fsync_tree(tmp)
            else:
                _copy_tree(Path(src), tmp)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            if move and tmp.exists() and not Path(src).exists():
                os.replace(tmp, src)  # give the caller its folder back
            shutil.rmtree(tmp, ignore_errors=True)
            raise _infra(f"committing run {run_id} to {self.root}", exc) from exc
        try:
            with self._transaction():
                self._index(run_id, record.manifest, record.metrics, verdict, baseline)
                for tag in tags:
                    self._set_tag(tag, run_id)
        except sqlite3.Error as exc:
            shutil.rmtree(final, ignore_errors=True)
            raise InfrastructureError(
                f"indexing run {run_id} in {self.root} failed ({exc}): nothing was committed"
            ) from exc
        return self.get(run_id)

    def _index(
        self,
        run_id: str,
        manifest: dict[str, Any],
        metrics: dict[str, Any],
        verdict: str | None,
        baseline: str | None,
    ) -> None:
        found = manifest.get("models")
        models: dict[str, Any] = found if isinstance(found, dict) else {}
        teacher = next((label for label, m in models.items() if m.get("role") == "teacher"), "")
        meta = {"config": manifest.get("config", {}), "wall_seconds": manifest.get("wall_seconds")}
        self._db.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                f"runs/{run_id}",
                str(manifest.get("created") or _now()),
                _now(),
                str(manifest.get("harness_version", "")),
                int(manifest.get("schema_version", 0) or 0),
                teacher,
                verdict,
                baseline,
                json.dumps(meta, default=str),
            ),
        )
        for label, entry in models.items():
            info = entry.get("info") if isinstance(entry.get("info"), dict) else {}
            self._db.execute(
                "INSERT OR REPLACE INTO run_models VALUES (?, ?, ?, ?, ?)",
                (run_id, label, entry.get("role"), entry.get("spec"), info.get("fingerprint")),
            )
        for suite in metrics.get("suites", {}):
            self._db.execute("INSERT OR REPLACE INTO run_suites VALUES (?, ?)", (run_id, suite))

    def repair(self) -> list[str]:
        """Index COMPLETE folders under runs/ that the index lacks (a crash after the rename); their ids."""
        known = {row[0] for row in self._db.execute("SELECT run_id FROM runs")}
        fixed = []
        for folder in sorted((self.root / "runs").iterdir()):
            if folder.name in known or not (folder / COMPLETE_MARKER).exists():
                continue
            try:
                record = read_record(folder)
            except HarnessError:
                continue
            with self._transaction():
                self._index(folder.name, record.manifest, record.metrics, None, None)
            fixed.append(folder.name)
        return fixed

    # -- tags, verdicts --------------------------------------------------------------------------------
    def _set_tag(self, tag: str, run_id: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)", (tag, run_id, _now()))

    def tag(self, ref: str, tag: str) -> StoredRun:
        """Point `tag` at the run `ref` names (a tag names one run; tagging again moves it)."""
        check_tag(tag)
        run_id = self.resolve_id(ref)
        with self._transaction():
            self._set_tag(tag, run_id)
        return self.get(run_id)

    def set_verdict(self, run_id: str, verdict: str, baseline: str | None) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE runs SET verdict = ?, baseline = ? WHERE run_id = ?", (verdict, baseline, run_id)
            )

    # -- queries ---------------------------------------------------------------------------------------
    def get(self, run_id: str) -> StoredRun:
        runs = self._query("r.run_id = ?", [run_id])
        if not runs:
            raise HarnessError(f"no run {run_id} in the store {self.root}: see `harness runs list`")
        return runs[0]

    def runs(
        self,
        *,
        model: str | None = None,
        suite: str | None = None,
        since: str | None = None,
        tag: str | None = None,
    ) -> list[StoredRun]:
        """Committed runs, oldest first, filtered by model (label, spec or fingerprint prefix), suite,
        creation time (ISO date or time, or Nd for the last N days) and tag."""
        self.repair()
        where, args = ["1 = 1"], []
        if model:
            where.append(
                "EXISTS (SELECT 1 FROM run_models m WHERE m.run_id = r.run_id AND "
                "(m.label = ? OR m.spec LIKE ? OR m.fingerprint LIKE ?))"
            )
            args += [model, f"%{model}%", f"{model}%"]
        if suite:
            where.append("EXISTS (SELECT 1 FROM run_suites s WHERE s.run_id = r.run_id AND s.suite = ?)")
            args.append(suite)
        if since:
            where.append("r.created >= ?")
            args.append(parse_since(since))
        if tag:
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.run_id = r.run_id AND t.tag = ?)")
            args.append(tag)
        return self._query(" AND ".join(where), args)

    def _query(self, where: str, args: list[Any]) -> list[StoredRun]:
        rows = self._db.execute(
            f"SELECT run_id, path, created, committed, teacher, verdict, baseline FROM runs r WHERE {where} "
            "ORDER BY created, committed, rowid",
            args,
        ).fetchall()
        out = []
        for run_id, path, created, committed, teacher, verdict, baseline in rows:
            models = self._db.execute(
                "SELECT label, role, spec, fingerprint FROM run_models WHERE run_id = ? ORDER BY rowid",
                (run_id,),
            ).fetchall()
            suites = [
                r[0] for r in self._db.execute("SELECT suite FROM run_suites WHERE run_id = ?", (run_id,))
            ]
            tags = [
                r[0]
                for r in self._db.execute("SELECT tag FROM tags WHERE run_id = ? ORDER BY tag", (run_id,))
            ]
            full = self.root / path
            if not (full / COMPLETE_MARKER).exists():
                continue  # removed by hand: never offer a folder that is not a complete record
            out.append(
                StoredRun(
                    run_id=run_id,
                    path=full,
                    created=created,
                    committed=committed,
                    teacher=teacher or "",
                    models=tuple((str(a), str(b), str(c), str(d)) for a, b, c, d in models),
                    suites=tuple(sorted(suites)),
                    tags=tuple(tags),
                    verdict=verdict,
                    baseline=baseline,
                )
            )
        return out

    def resolve_id(self, ref: str) -> str:
        """A run id from an id, a tag, `latest`, or a unique id prefix (6 characters or more)."""
        query = "SELECT run_id FROM runs ORDER BY created, committed, rowid"
        ids = [row[0] for row in self._db.execute(query)]
        if ref in ids:
            return ref
        row = self._db.execute("SELECT run_id FROM tags WHERE tag = ?", (ref,)).fetchone()
        if row is not None:
            return str(row[0])
        if ref == "latest" and ids:
            return ids[-1]
        matches = [i for i in ids if len(ref) >= 6 and i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        hint = f"{len(matches)} runs start with it" if matches else "no run id or tag matches"
        raise HarnessError(f"run {ref!r} is not in the store {self.root} ({hint}): see `harness runs list`")

    # -- pending runs (resume after a kill) ------------------------------------------------------------
    def pending(self, key: str) -> str:
        """The run id a job with this key is computing: the one a killed attempt left, else a new one."""
        marker = self.root / ".pending" / f"{key}.json"
        if marker.exists():
            try:
                return str(json.loads(marker.read_text())["run_id"])
            except (ValueError, KeyError, OSError):
                pass
        run_id = new_run_id()
        from harness.store.record import atomic_write

        atomic_write(marker, json.dumps({"run_id": run_id, "started": _now()}))
        return run_id

    @contextmanager
    def job_lock(self, key: str | None) -> Iterator[None]:
        """Hold an exclusive lock for one job key (a run file) while it runs: a second `harness run` of
        the same file on this store fails at once instead of computing into the same folder. The OS
        drops the lock when the process dies, so a killed run never blocks its resumption."""
        if key is None:
            yield
            return
        import fcntl

        with open(self.root / ".locks" / f"{key}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise HarnessError(
                    f"another `harness run` of this file is running on the store {self.root}: "
                    "wait for it to finish (or stop it; the next run resumes its work)"
                ) from None
            yield

    def finish_pending(self, key: str, run_id: str) -> None:
        """Forget the job's marker and what is left of its staging folder (its run is committed)."""
        (self.root / ".pending" / f"{key}.json").unlink(missing_ok=True)
        shutil.rmtree(self.staging(run_id), ignore_errors=True)


def resolve(store: Path | str | None, ref: str) -> Path:
    """A run folder for `ref`: an existing folder, else a run id, tag, `latest` or id prefix in the store."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path  # a folder; the reader says so if it is not a complete record
    root = Path(store) if store is not None else default_store()
    if not (root / "index.sqlite").exists():
        raise HarnessError(
            f"run {ref!r} is neither a run folder nor in a run store ({root} has no index): "
            "give a folder, or --store DIR"
        )
    with RunStore(root) as store_:
        return store_.run_path(store_.resolve_id(ref))
