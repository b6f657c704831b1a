"""HTTP for the openai backend: a pool of endpoints (replicas of one served model), retries, concurrency.

Every request has a deadline (`timeout` seconds for the whole exchange, body included). Retryable
failures (connection errors, timeouts, truncated or malformed bodies, 408/429/5xx) are retried on
the same endpoint with exponential backoff and full jitter, `retries` attempts in all; then that
endpoint is marked down and the request moves to the least busy endpoint still up. When every
endpoint is down the run stops with one line naming each endpoint and its last failure
(InfrastructureError, exit 3). Other 4xx answers are the request's fault: not retried, HarnessError.

The API key (read from the environment by the caller) is sent as a bearer token and scrubbed from
every message this module produces.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import httpx

from harness.backends.openai_spec import OpenAIOptions
from harness.errors import HarnessError, InfrastructureError

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_MESSAGE_CHARS = 200


class RequestRejected(HarnessError):
    """The server refused a request (a 4xx other than 408/429): retrying cannot help."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class _Retryable(Exception):
    """One failed attempt that may succeed when tried again."""

    def __init__(self, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Aborted(Exception):
    """Another request of the same batch failed: stop retrying, leave the endpoint's state alone."""


@dataclass
class Endpoint:
    url: str  # base URL ending in /v1
    down: bool = False
    in_flight: int = 0
    last_error: str = ""
    requests: int = 0  # attempts sent here (for the record)

    @property
    def root(self) -> str:
        """The server root (vLLM's /tokenize, /health live there, not under /v1)."""
        return self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url


class EndpointPool:
    """Replicas of one served model behind a thread pool; `post`/`get` are safe from many threads."""

    def __init__(
        self,
        urls: Sequence[str],
        options: OpenAIOptions,
        api_key: str | None,
        model: str,
        transport: httpx.BaseTransport | None = None,  # tests of the retry logic only
    ) -> None:
        self.endpoints = [Endpoint(u) for u in urls]
        self.options = options
        self.model = model
        self._secret = api_key or ""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(
            max_connections=options.max_concurrency, max_keepalive_connections=options.max_concurrency
        )
        self._client = httpx.Client(
            headers=headers, limits=limits, timeout=httpx.Timeout(options.timeout), transport=transport
        )
        self._lock = threading.Lock()
        self._turn = 0
        self._abort = threading.Event()

    # ---- public ----------------------------------------------------------------------------
    def post(
        self, path: str, payload: dict[str, Any], *, at_root: bool = False, expect: str = ""
    ) -> dict[str, Any]:
        """The JSON object answered; `expect` names a key it must have (else it counts as malformed)."""
        return self._request("POST", path, payload, at_root, expect)

    def get(self, path: str, *, at_root: bool = False) -> dict[str, Any]:
        return self._request("GET", path, None, at_root, "")

    def get_each(self, path: str) -> list[tuple[Endpoint, dict[str, Any] | None]]:
        """GET on every endpoint (e.g. /models at load); an endpoint that fails is marked down."""
        out: list[tuple[Endpoint, dict[str, Any] | None]] = []
        for endpoint in self.endpoints:
            with self._lock:
                endpoint.in_flight += 1
            try:
                out.append((endpoint, self._attempts(endpoint, "GET", path, None, False, "data")))
            except _Down:
                out.append((endpoint, None))
        self._raise_if_all_down()
        return out

    def map(
        self, path: str, payloads: Sequence[dict[str, Any]], *, at_root: bool = False, expect: str = ""
    ) -> list[dict[str, Any]]:
        """POST every payload, at most max_concurrency at once; results in order. The first failure
        stops the rest (already running requests finish or fail fast) and is raised."""
        if len(payloads) <= 1 or self.options.max_concurrency == 1:
            return [self.post(path, p, at_root=at_root, expect=expect) for p in payloads]
        results: list[dict[str, Any]] = [{} for _ in payloads]
        for index, result in self.imap(path, payloads, at_root=at_root, expect=expect):
            results[index] = result
        return results

    def imap(
        self, path: str, payloads: Sequence[dict[str, Any]], *, at_root: bool = False, expect: str = ""
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """POST every payload like `map`, yielding (index, result) as each one completes, so the caller
        can keep what finished when a later request fails. Closing the iterator early stops the rest."""
        if not payloads:
            return
        self._abort.clear()
        try:
            with ThreadPoolExecutor(
                max(1, self.options.max_concurrency), thread_name_prefix="harness-openai"
            ) as pool:
                futures = {
                    pool.submit(self.post, path, p, at_root=at_root, expect=expect): i
                    for i, p in enumerate(payloads)
                }
                try:
                    for future in as_completed(futures):
                        yield futures[future], future.result()
                except BaseException:
                    self._abort.set()  # running requests stop at their next retry
                    for future in futures:
                        future.cancel()
                    raise
        finally:
            self._abort.clear()

    def up(self) -> list[Endpoint]:
        return [e for e in self.endpoints if not e.down]

    def redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def close(self) -> None:
        self._client.close()

    # ---- internals -------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, payload: dict[str, Any] | None, at_root: bool, expect: str
    ) -> dict[str, Any]:
        while True:
            endpoint = self._pick()
            try:
                return self._attempts(endpoint, method, path, payload, at_root, expect)
            except _Down:
                continue  # that endpoint is now down: try the next one

    def _pick(self) -> Endpoint:
        with self._lock:
            up = self.up()
            if not up:
                self._raise_if_all_down()
            self._turn += 1
            # least busy first; among equals, take turns
            order = sorted(range(len(up)), key=lambda i: (up[i].in_flight, (i - self._turn) % len(up)))
            chosen = up[order[0]]
            chosen.in_flight += 1
            return chosen

    def _raise_if_all_down(self) -> None:
        if self.up():
            return
        each = "; ".join(f"{e.url}: {e.last_error}" for e in self.endpoints)
        n = len(self.endpoints)
        what = "the endpoint" if n == 1 else f"all {n} endpoints"
        raise InfrastructureError(
            self.redact(
                f"{what} of served model {self.model!r} failed ({each}): check the server "
                "(its log, `harness serve`), then rerun the same command to resume from the cache"
            )
        )

    def _attempts(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        at_root: bool,
        expect: str,
    ) -> dict[str, Any]:
        """Up to `retries` attempts on one endpoint (whose in_flight the caller raised); raises _Down
        when the endpoint is given up, _Aborted when the batch this request belongs to failed."""
        opts = self.options
        try:
            for attempt in range(opts.retries):
                if endpoint.down:
                    raise _Down
                if attempt and self._abort.is_set():
                    raise _Aborted
                try:
                    return self._once(endpoint, method, path, payload, at_root, expect)
                except _Retryable as exc:
                    endpoint.last_error = f"{exc} after {attempt + 1} attempt(s)"
                    if attempt + 1 < opts.retries:
                        time.sleep(_retry_delay(exc, attempt, opts.backoff, opts.backoff_max))
            endpoint.down = True
            raise _Down
        finally:
            with self._lock:
                endpoint.in_flight -= 1

    def _once(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        at_root: bool,
        expect: str,
    ) -> dict[str, Any]:
        url = (endpoint.root if at_root else endpoint.url) + path
        endpoint.requests += 1
        deadline = time.monotonic() + self.options.timeout
        try:
            with self._client.stream(method, url, json=payload) as response:
                body = _read_until(response, deadline, self.options.timeout)
                status = response.status_code
                retry_after = response.headers.get("retry-after")
        except httpx.UnsupportedProtocol as exc:
            raise HarnessError(f"{url}: {exc}: use an http:// or https:// URL") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise _Retryable(_transport_message(exc, self.options.timeout)) from None
        if status in RETRY_STATUS:
            raise _Retryable(f"status {status} {_detail(body)}".rstrip(), retry_after)
        if status >= 400:
            detail = self.redact(_detail(body))
            raise RequestRejected(
                f"{url} refused the request for model {self.model!r}: status {status} {detail}".rstrip(),
                status,
                detail,
            )
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable(f"malformed JSON in a {status} response ({len(body)} bytes)") from None
        if not isinstance(data, dict) or (expect and expect not in data):
            what = f"without {expect!r}" if isinstance(data, dict) else "that is not a JSON object"
            raise _Retryable(f"malformed {status} response ({what})")
        return data


class _Down(Exception):
    """The endpoint just failed all its attempts (or was already down)."""


def _read_until(response: httpx.Response, deadline: float, timeout: float) -> bytes:
    chunks = []
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise _Retryable(f"timed out after {timeout:g} s (response still arriving)")
    return b"".join(chunks)


def _transport_message(exc: Exception, timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {timeout:g} s ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or unreachable"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed mid-response (truncated body)"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"[:_MESSAGE_CHARS]


def _detail(body: bytes) -> str:
    """The server's error message (OpenAI-style {"error": {"message"}}), one line, short."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
        err = data.get("error", data) if isinstance(data, dict) else data
        message = err.get("message", err) if isinstance(err, dict) else err
        text = str(message)
    except (json.JSONDecodeError, AttributeError):
        pass
    text = " ".join(text.split())
    return f"({text[:_MESSAGE_CHARS]})" if text else ""


def _retry_delay(exc: _Retryable, attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter; a server's Retry-After (seconds) is honoured up to cap."""
    if exc.retry_after:
        try:
            return min(max(float(exc.retry_after), 0.0), cap)
        except ValueError:
            pass
    return random.uniform(0, min(cap, base * 2**attempt))
