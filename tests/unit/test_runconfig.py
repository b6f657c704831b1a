"""The run file: everything the compare flags say, strict errors, and `harness run` into a store (mock)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.cli import _compare_config, build_parser, main
from harness.config import CompareConfig
from harness.errors import HarnessError
from harness.runconfig import SPECIAL, BaselinePolicy, Plan, RunFile, load_run_file, to_compare_config
from harness.store.index import RunStore

# compare flags whose file key has another name (or that the file says another way)
FLAG_TO_KEY = {
    "students": "students",
    "suite": "suites",
    "out": "out_dir",
    "no_kd": "kd",
    "kd_temperature": "kd_temperatures",
    "engine_arg": "engine_args",
    "no_report": "report",
    "format": "formats",
    "gate_json": None,  # a CI artefact path: `harness run` writes regress.json into the run folder
    "margin": "margins",
    "test": "baseline.test",  # the gate's mode sits with the baseline it is tested against
}


def _compare_dests() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return [a.dest for a in sub.choices["compare"]._actions if a.dest != "help"]  # type: ignore[attr-defined]


def test_every_compare_field_and_flag_has_a_key() -> None:
    keys = set(RunFile.model_fields) | {f"baseline.{k}" for k in BaselinePolicy.model_fields}
    fields = {f.name for f in dataclasses.fields(CompareConfig)}
    assert fields - set(SPECIAL) <= keys
    for dest in _compare_dests():
        key = FLAG_TO_KEY.get(dest, dest)
        assert key is None or key in keys, f"compare flag {dest} has no run-file key"


def test_the_same_settings_from_flags_and_from_a_file_are_equal(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    flags = ["compare", "mock:t", "mock:s", "--base", "mock:b", "--suite", "icl-basic,cot-basic"]
    flags += ["--limit", "5", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    flags += [
        "--seed",
        "7",
        "--bootstrap",
        "50",
        "--chat-template",
        "on",
        "--shots",
        "0,2",
        "--icl-draws",
        "2",
    ]
    flags += ["--max-gen-tokens", "32", "--no-kd", "--kd-temperature", "1,3", "--kd-max-tokens", "9"]
    flags += ["--kd-max-sequences", "5", "--kd-top-k", "7", "--kd-mode", "exact", "--chunk-size", "3"]
    flags += ["--engine-arg", "max_model_len=512", "--kd-cka-positions", "11"]
    from_flags = _compare_config(build_parser().parse_args(flags))
    (tmp_path / "run.yaml").write_text(
        """
teacher: mock:t
students: [mock:s]
base: {path: b, backend: mock}
suites: [icl-basic, cot-basic]
limit: 5
out_dir: out
cache_dir: ./cache
seed: 7
bootstrap: 50
chat_template: "on"
shots: [0, 2]
icl_draws: 2
max_gen_tokens: 32
kd: false
kd_temperatures: [1, 3]
kd_max_tokens: 9
kd_max_sequences: 5
kd_top_k: 7
kd_mode: exact
chunk_size: 3
engine_args: {max_model_len: 512}
kd_cka_positions: 11
"""
    )
    from_file = to_compare_config(load_run_file(tmp_path / "run.yaml"), tmp_path)
    assert from_file == dataclasses.replace(
        from_flags, out_dir=(tmp_path / "out").resolve(), cache_dir=(tmp_path / "cache").resolve()
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("teacher: mock:t\nstudents: [mock:s]\nlimt: 3\n", "unknown key 'limt'; allowed keys: limit"),
        (
            "teacher: mock:t\nstudents: [mock:s]\nkd_mode: fast\n",
            "key 'kd_mode': Input should be 'auto', 'exact'",
        ),
        ("students: [mock:s]\n", "missing required key 'teacher'"),
        ("teacher: mock:t\nstudents: []\n", "key 'students'"),
        ("teacher: mock:t\nstudents: [{path: s, colour: red}]\n", "unknown key 'students.0.colour'"),
        ("teacher: mock:t\nstudents: [mock:s]\nbaseline: {tag: a, run: b}\n", "exactly one of tag or run"),
        (
            "teacher: mock:t\nstudents: [mock:s]\nbaseline: {tag: a, test: equivalence}\n",
            "key 'baseline.test': Input should be 'non-inferiority' or 'regression'",
        ),
        ("teacher: mock:t\nstudents: [mock:s]\nlimit: 0\n", "run file: limit 0"),
        ("teacher: mock:t\nstudents: [mock:s]\nchunk_size: 0\n", "run file: chunk_size 0"),
        ("teacher: [\n", "line 2 is not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_errors_name_the_file_the_key_and_the_allowed_values(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "nightly.yaml"
    path.write_text(text)
    with pytest.raises(HarnessError) as info:
        to_compare_config(load_run_file(path), tmp_path)
    message = str(info.value)
    assert needle in message and "\n" not in message
    if "run file:" not in needle:
        assert str(path) in message


def _nightly(tmp_path: Path, student: str = "mock:s") -> Path:
    path = tmp_path / "nightly.yaml"
    path.write_text(
        f"""
teacher: mock:t
students: [{{path: {student.split(":")[1]}, backend: mock, label: student}}]
suites: [icl-basic]
limit: 4
shots: [0, 2]
icl_draws: 1
bootstrap: 50
kd_max_sequences: 4
kd_max_tokens: 4
cache_dir: cache
store: store
formats: md
tags: [nightly]
tags_on_pass: [nightly-good]
baseline: {{tag: nightly-good}}
margins: {{score: 0.5}}
"""
    )  # 4 agreeing items show non-inferiority only for margins above 0.40 (README)
    return path


def test_harness_run_commits_into_the_store_and_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _nightly(tmp_path)
    assert main(["run", str(path)]) == 0  # first night: no baseline yet, the gate is skipped
    first_out = capsys.readouterr().out
    assert "no baseline yet" in first_out and "committed:" in first_out
    assert main(["run", str(path)]) == 0
    assert "verdict: pass" in capsys.readouterr().out
    store = RunStore(tmp_path / "store")
    runs = store.runs()
    assert len(runs) == 2 and [r.verdict for r in runs] == [None, "pass"]
    assert store.resolve_id("nightly-good") == runs[1].run_id and runs[1].baseline == "nightly-good"
    verdict = json.loads((runs[1].path / "regress.json").read_text())
    assert verdict["baseline"] == "nightly-good" and verdict["current"] == runs[1].run_id
    assert all(m["margin"] == 0.5 for m in verdict["metrics"] if m["suite"] == "icl-basic")
    assert {m["test"] for m in verdict["metrics"]} == {"non-inferiority"}
    assert (runs[1].path / "summary.md").exists()  # the report went in before the commit
    assert not list((tmp_path / "store" / ".staging").iterdir())
    assert not list((tmp_path / "store" / ".pending").iterdir())


def test_a_run_killed_after_its_commit_is_not_committed_twice(tmp_path: Path) -> None:
    """The pending marker survives a kill between the commit and its removal: the rerun only finishes."""
    path = _nightly(tmp_path)
    assert main(["run", str(path)]) == 0
    store = RunStore(tmp_path / "store")
    (run,) = store.runs()
    import hashlib

    key = hashlib.sha256(str(path.resolve()).encode() + path.read_bytes()).hexdigest()[:16]
    (tmp_path / "store" / ".pending" / f"{key}.json").write_text(json.dumps({"run_id": run.run_id}))
    assert main(["run", str(path)]) == 0
    assert [r.run_id for r in store.runs()] == [run.run_id]


def test_compare_with_a_missing_baseline_fails_before_any_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["compare", "mock:t", "mock:s", "--baseline", "nightly-good", "--store", str(tmp_path / "st")]
    )
    assert code == 2 and "nightly-good" in capsys.readouterr().err
    assert not (tmp_path / "st" / "runs").exists() or not list((tmp_path / "st" / "runs").iterdir())


def test_the_examples_are_valid() -> None:
    import yaml

    from harness.regress import parse_margins

    examples = Path(__file__).resolve().parents[2] / "examples"
    run = load_run_file(examples / "nightly.yaml")
    assert (
        run.baseline is not None
        and run.baseline.ref() == "nightly-good"
        and run.tags_on_pass == ["nightly-good"]
        and run.baseline.test == "non-inferiority"
    )
    parse_margins(f"{k}={v}" for k, v in run.margins.items())
    workflow = yaml.safe_load((examples / "github-workflow.yml").read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    assert any("harness run examples/nightly.yaml" in step.get("run", "") for step in steps)
    cron = [
        line for line in (examples / "cron.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert any(
        "harness run examples/nightly.yaml" in line and line.split()[:5] == ["30", "2", "*", "*", "*"]
        for line in cron
    )


def test_compare_with_store_and_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compare", "mock:t", "mock:s", "--suite", "icl-basic", "--limit", "3", "--shots", "0,2"]
    args += ["--icl-draws", "1", "--bootstrap", "20", "--kd-max-sequences", "2", "--kd-max-tokens", "3"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--store", str(tmp_path / "store"), "--no-report"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    first = RunStore(tmp_path / "store").runs()[0].run_id
    out = tmp_path / "verdict.json"
    gate = ["--baseline", first, "--json", str(out), "--test", "regression"]  # 3 items: NI not shown
    assert main([*args, "--out", str(tmp_path / "two"), *gate]) == 0
    written = json.loads((tmp_path / "two" / "regress.json").read_text())
    assert written["baseline"] == first and {m["test"] for m in written["metrics"]} == {"regression"}
    assert json.loads(out.read_text())["exit_code"] == 0
    runs = RunStore(tmp_path / "store").runs()
    assert len(runs) == 2 and runs[1].verdict == "pass" and (runs[1].path / "regress.json").exists()
    assert (tmp_path / "one" / "COMPLETE").exists()  # the compare's own folder stays (the store holds a copy)


def test_disk_full_while_a_run_writes_fails_cleanly_and_the_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from harness.store import record

    path = _nightly(tmp_path)
    assert main(["run", str(path)]) == 0
    store = RunStore(tmp_path / "store")
    (kept,) = store.runs()
    real = record.atomic_write

    def full(target: Path, text: str) -> None:
        if target.name == "metrics.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(target, text)

    monkeypatch.setattr(record, "atomic_write", full)
    capsys.readouterr()
    assert main(["run", str(path)]) == 3
    assert "No space left on device" in capsys.readouterr().err
    assert [r.run_id for r in store.runs()] == [kept.run_id] and (kept.path / "metrics.json").exists()
    monkeypatch.setattr(record, "atomic_write", real)
    assert main(["run", str(path)]) == 0  # the same run id, resumed from the cache
    assert len(store.runs()) == 2 and store.runs()[1].verdict == "pass"


def test_a_second_run_of_the_same_file_is_refused_while_the_first_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fcntl
    import hashlib

    path = _nightly(tmp_path)
    RunStore(tmp_path / "store").close()
    key = hashlib.sha256(str(path.resolve()).encode() + path.read_bytes()).hexdigest()[:16]
    with open(tmp_path / "store" / ".locks" / f"{key}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `harness run` holds it
        assert main(["run", str(path)]) == 2
    assert "another `harness run` of this file is running" in capsys.readouterr().err
    assert main(["run", str(path)]) == 0  # released: runs


def test_the_gate_mode_comes_from_the_baseline_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`baseline: {test: regression}` reaches the gate's Plan; without it the mode is non-inferiority."""
    from harness import runconfig

    plans: list[Plan] = []
    monkeypatch.setattr(runconfig, "compare_and_gate", lambda config, plan: plans.append(plan) or 0)
    path = _nightly(tmp_path)
    assert load_run_file(path).baseline == BaselinePolicy(tag="nightly-good")
    runconfig.run_file(path)
    path.write_text(path.read_text().replace("{tag: nightly-good}", "{tag: nightly-good, test: regression}"))
    assert load_run_file(path).baseline == BaselinePolicy(tag="nightly-good", test="regression")
    runconfig.run_file(path)
    assert [p.test for p in plans] == ["non-inferiority", "regression"]
