"""`harness serve` without vLLM: command lines, distributed pass-through, and the process lifecycle
(start, health, Ctrl-C/SIGTERM, no orphans) on small stand-in servers written here.

The real vLLM server (and vLLM's own parser reading these command lines) is in
tests/integration/test_serve.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any

import pytest

from harness import serve as srv
from harness.errors import HarnessError, InfrastructureError

DISTRIBUTED = {
    "tensor_parallel_size": 4,
    "pipeline_parallel_size": 2,
    "data_parallel_size": 2,
    "distributed_executor_backend": "ray",
}


def _model(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def test_engine_flags_cover_types() -> None:
    flags = srv.engine_flags(
        {"max_model_len": 2048, "enforce_eager": True, "enable_prefix_caching": False, "x": None}
        | {"limit_mm_per_prompt": {"image": 0}, "gpu_memory_utilization": 0.8}
    )
    assert flags == [
        "--max-model-len",
        "2048",
        "--enforce-eager",
        "--no-enable-prefix-caching",
        "--limit-mm-per-prompt",
        '{"image": 0}',
        "--gpu-memory-utilization",
        "0.8",
    ]


@pytest.mark.parametrize("key", ["model", "port", "host", "served_model_name"])
def test_reserved_engine_args_are_refused(key: str) -> None:
    with pytest.raises(HarnessError, match=f"--engine-arg {key}"):
        srv.engine_flags({key: "x"})


@pytest.mark.parametrize("key", ["api_key", "hf_token"])
def test_secret_engine_args_are_refused_without_echo(key: str) -> None:
    with pytest.raises(HarnessError) as info:
        srv.engine_flags({key: "sk-SECRET"})
    assert "VLLM_API_KEY" in str(info.value) and "sk-SECRET" not in str(info.value)


def test_distributed_settings_reach_the_server_command_line(tmp_path: Path) -> None:
    model = _model(tmp_path, "teacher")
    (server,) = srv.plan_servers(
        [str(model)], port=18000, log_dir=tmp_path / "logs", engine_args=DISTRIBUTED, cpu=False
    )
    cmd = server.command
    assert cmd[:3] == [sys.executable, "-m", srv.SERVER_MODULE]
    pairs = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert pairs["--model"] == str(model.resolve()) and pairs["--served-model-name"] == "teacher"
    for flag, value in [
        ("--tensor-parallel-size", "4"),
        ("--pipeline-parallel-size", "2"),
        ("--data-parallel-size", "2"),
        ("--distributed-executor-backend", "ray"),
    ]:
        assert cmd[cmd.index(flag) + 1] == value
    assert "--dtype" not in cmd and "--enforce-eager" not in cmd  # GPU build: vLLM's own defaults
    assert server.spec == "openai:http://127.0.0.1:18000/v1#teacher"
    assert server.log_path == tmp_path / "logs" / "teacher.log"


def test_cpu_build_defaults_and_env(tmp_path: Path) -> None:
    model = _model(tmp_path, "m")
    (server,) = srv.plan_servers(
        [f"alias={model}"], log_dir=tmp_path, engine_args={"dtype": "bfloat16"}, cpu=True
    )
    assert server.name == "alias"
    assert server.command[server.command.index("--dtype") + 1] == "bfloat16"  # the user's value wins
    assert "--enforce-eager" in server.command
    env = srv.server_env(True, {"VLLM_CPU_KVCACHE_SPACE": "1"})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert env["VLLM_NO_USAGE_STATS"] == "1"


def test_names_ports_and_paths_are_checked(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    a, b = _model(tmp_path, "a"), _model(tmp_path / "x", "a")
    with pytest.raises(HarnessError, match="same name"):
        srv.plan_servers([str(a), str(b)], log_dir=tmp_path)
    servers = srv.plan_servers([str(a), f"b={b}"], log_dir=tmp_path)
    assert len({s.port for s in servers}) == 2
    with pytest.raises(HarnessError, match="not a folder"):
        srv.plan_servers([str(tmp_path / "missing")], log_dir=tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(HarnessError, match=f"port {port}"):
            srv.plan_servers([str(a)], port=port, log_dir=tmp_path)


def test_vllm_backend_passes_distributed_args_to_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's --engine-arg values reach vllm.LLM unchanged (a stand-in LLM records them)."""
    from harness.backends import vllm as vllm_backend
    from harness.cli import _compare_config, build_parser
    from harness.compare import _load

    seen: dict[str, Any] = {}

    class FakeLLM:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)
            raise RuntimeError("no GPUs here")

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM))
    monkeypatch.setattr(vllm_backend, "_cpu_only", lambda: False)
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "ERROR")
    model = _model(tmp_path, "teacher")
    argv = ["compare", f"vllm:{model}", f"vllm:{model}", "--no-kd"]
    for key, value in {**DISTRIBUTED, "data_parallel_size": 1}.items():
        argv += ["--engine-arg", f"{key}={value}"]
    config = _compare_config(build_parser().parse_args(argv))
    with pytest.raises(InfrastructureError, match="no GPUs here"):
        _load("teacher", config.teacher, config)
    assert seen["model"] == str(model)
    assert seen["tensor_parallel_size"] == 4 and seen["pipeline_parallel_size"] == 2
    assert seen["distributed_executor_backend"] == "ray" and seen["data_parallel_size"] == 1


def test_offline_data_parallel_points_to_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.backends.vllm import VLLMBackend

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=None))
    with pytest.raises(HarnessError, match="harness serve MODEL --engine-arg data_parallel_size"):
        VLLMBackend(str(_model(tmp_path, "m")), data_parallel_size=2)


# ---- the lifecycle, on stand-in servers -------------------------------------------------------------
STANDIN = textwrap.dedent(
    """
    import http.server, os, subprocess, sys, time
    port, pidfile, delay, die = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4] == "die"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # a worker
    open(pidfile, "w").write(f"{os.getpid()} {child.pid}")
    time.sleep(delay)
    if die:
        sys.exit(7)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a):
            print("request", self.path, flush=True)
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


def _standin(tmp_path: Path, name: str, delay: float = 0.0, die: bool = False) -> srv.ServerProcess:
    port = srv.free_port("127.0.0.1")
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    pidfile = tmp_path / f"{name}.pids"
    cmd = [sys.executable, str(script), str(port), str(pidfile), str(delay), "die" if die else "live"]
    return srv.ServerProcess(
        name, tmp_path, "127.0.0.1", port, tmp_path / "logs" / f"{name}.log", cmd, dict(os.environ)
    )


def _pids(tmp_path: Path, name: str) -> list[int]:
    return [int(p) for p in (tmp_path / f"{name}.pids").read_text().split()]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie waiting for its parent counts as gone
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"


@pytest.mark.timeout(60)
def test_running_starts_waits_and_stops_process_groups(tmp_path: Path) -> None:
    servers = [_standin(tmp_path, "t", delay=0.5), _standin(tmp_path, "s")]
    with srv.running(servers, timeout=30):
        assert all(s.healthy() for s in servers)
        pids = _pids(tmp_path, "t") + _pids(tmp_path, "s")
        assert not any(_gone(p) for p in pids)
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(p) for p in pids), "a server or its worker outlived the stop"
    assert "# harness serve:" in (tmp_path / "logs" / "t.log").read_text()


@pytest.mark.timeout(60)
def test_a_server_that_dies_while_starting_is_a_clear_error(tmp_path: Path) -> None:
    servers = [_standin(tmp_path, "ok"), _standin(tmp_path, "bad", delay=0.2, die=True)]
    with (
        pytest.raises(
            InfrastructureError, match=r"server bad exited with code 7 while starting: see .*bad\.log"
        ),
        srv.running(servers, timeout=30),
    ):
        pass
    assert all(s.exit_code() is not None for s in servers)


@pytest.mark.timeout(60)
def test_startup_timeout_is_bounded(tmp_path: Path) -> None:
    slow = _standin(tmp_path, "slow", delay=30)
    started = time.monotonic()
    with pytest.raises(InfrastructureError, match="not healthy after 1 s"), srv.running([slow], timeout=1):
        pass
    assert time.monotonic() - started < 15
    assert slow.exit_code() is not None


SERVE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from harness import serve as srv
    servers = [srv.ServerProcess(**spec) for spec in {specs!r}]
    for s in servers:
        s.model_dir, s.log_path = Path(s.model_dir), Path(s.log_path)
    sys.exit(srv.serve(servers, 30, out=lambda line: print(line, flush=True), poll=0.2))
    """
)


def _serve_subprocess(
    tmp_path: Path, servers: list[srv.ServerProcess]
) -> tuple[subprocess.Popen[str], list[str]]:
    """`serve()` in a child process (it installs signal handlers), read until it says it is serving."""
    specs = [
        {k: str(v) if isinstance(v, Path) else v for k, v in s.__dict__.items() if k != "proc"}
        for s in servers
    ]
    repo = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "serve_main.py"
    script.write_text(SERVE_SCRIPT.format(repo=repo, specs=specs))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith("serving;"):
            break
    return proc, lines


def _wait_gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return all(_gone(p) for p in pids)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_loop_stops_everything_on_ctrl_c_and_sigterm(tmp_path: Path, sig: int) -> None:
    proc, lines = _serve_subprocess(tmp_path, [_standin(tmp_path, "t"), _standin(tmp_path, "s")])
    assert any(line.startswith("t: openai:http://127.0.0.1:") for line in lines), lines
    assert any(line.startswith("compare: harness compare openai:") for line in lines)
    pids = _pids(tmp_path, "t") + _pids(tmp_path, "s")
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "stopped 2 server(s)" in rest
    assert _wait_gone(pids), "orphaned server processes"


@pytest.mark.timeout(90)
def test_a_dead_server_is_reported_and_the_others_keep_serving(tmp_path: Path) -> None:
    teacher, student = _standin(tmp_path, "t"), _standin(tmp_path, "s")
    proc, _ = _serve_subprocess(tmp_path, [teacher, student])
    assert proc.stdout is not None
    os.kill(_pids(tmp_path, "s")[0], signal.SIGKILL)
    line = proc.stdout.readline()
    assert (
        line.startswith("error: server s exited with code -9: see ") and "1 server(s) still serving" in line
    )
    assert teacher.healthy()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "stopped 1 server(s)" in rest
    assert _wait_gone(_pids(tmp_path, "t") + _pids(tmp_path, "s"))


@pytest.mark.timeout(60)
def test_serve_loop_exits_3_when_every_server_died(tmp_path: Path) -> None:
    server = _standin(tmp_path, "t")
    messages: list[str] = []

    def out(line: str) -> None:
        messages.append(line)
        if line.startswith("serving;"):
            os.kill(_pids(tmp_path, "t")[0], signal.SIGKILL)

    with pytest.raises(InfrastructureError, match=r"every server exited \(t\)"):
        srv.serve([server], 30, out=out, poll=0.1)
    assert any(m.startswith("error: server t exited with code -9") for m in messages)
    assert _wait_gone(_pids(tmp_path, "t"))
