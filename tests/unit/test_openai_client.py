"""The endpoint pool's retry and fail-over logic, on httpx's in-memory transport (no sockets).

Real sockets, truncated bodies, slow servers and a real vLLM server are in
tests/integration/test_openai_faults.py.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from harness.backends.openai_client import EndpointPool, RequestRejected, _retry_delay, _Retryable
from harness.backends.openai_spec import OpenAIOptions
from harness.errors import HarnessError, InfrastructureError

A, B = "http://a.test:1/v1", "http://b.test:2/v1"
OK = {"choices": [{"text": "ok"}]}
SECRET = "sk-unit-SECRET-123"
FAST = OpenAIOptions(retries=3, backoff=0.001, backoff_max=0.002, timeout=5, max_concurrency=4)


def _pool(
    handler: Callable[[httpx.Request], httpx.Response], urls: tuple[str, ...] = (A,), **kw: object
) -> EndpointPool:
    options = dataclasses.replace(FAST, **kw)  # type: ignore[arg-type]
    return EndpointPool(urls, options, SECRET, "m", transport=httpx.MockTransport(handler))


def _script(*responses: httpx.Response) -> tuple[Callable[[httpx.Request], httpx.Response], list[str]]:
    """A handler answering from the list in order (the last one repeats); records each request's host."""
    seen: list[str] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            seen.append(request.url.host)
            return responses[min(len(seen) - 1, len(responses) - 1)]

    return handler, seen


def test_5xx_then_success_is_retried() -> None:
    handler, seen = _script(httpx.Response(503), httpx.Response(500), httpx.Response(200, json=OK))
    assert _pool(handler).post("/completions", {}) == OK
    assert len(seen) == 3


def test_429_burst_then_success_honours_retry_after_capped() -> None:
    handler, seen = _script(httpx.Response(429, headers={"Retry-After": "100"}), httpx.Response(200, json=OK))
    assert _pool(handler).post("/completions", {}) == OK
    assert len(seen) == 2  # waited min(100, backoff_max) = 2 ms, not 100 s


def test_malformed_json_and_missing_keys_are_retried() -> None:
    handler, seen = _script(
        httpx.Response(200, content=b"{not json"),
        httpx.Response(200, json={"x": 1}),
        httpx.Response(200, json=OK),
    )
    assert _pool(handler).post("/completions", {}, expect="choices") == OK
    assert len(seen) == 3


def test_bounded_attempts_then_one_line_error_naming_endpoint_and_status() -> None:
    handler, seen = _script(httpx.Response(503, json={"error": {"message": "overloaded"}}))
    pool = _pool(handler)
    with pytest.raises(InfrastructureError) as info:
        pool.post("/completions", {})
    message = str(info.value)
    assert info.value.exit_code == 3
    assert len(seen) == 3  # retries=3 attempts, no more
    assert A in message and "status 503" in message and "overloaded" in message and "3 attempt" in message
    assert "\n" not in message
    assert pool.endpoints[0].down
    with pytest.raises(InfrastructureError):  # down stays down: no further requests
        pool.post("/completions", {})
    assert len(seen) == 3


def test_4xx_is_not_retried_and_is_a_user_error() -> None:
    handler, seen = _script(httpx.Response(400, json={"error": {"message": "prompt too long"}}))
    with pytest.raises(RequestRejected) as info:
        _pool(handler).post("/completions", {})
    assert isinstance(info.value, HarnessError) and info.value.exit_code == 2
    assert info.value.status == 400 and "prompt too long" in str(info.value)
    assert len(seen) == 1


def test_connection_errors_are_retried_and_named() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(InfrastructureError, match="connection refused"):
        _pool(handler).post("/completions", {})


def test_api_key_is_sent_but_never_in_messages() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        echoed = request.headers["authorization"]
        assert echoed == f"Bearer {SECRET}"
        return httpx.Response(500, json={"error": {"message": f"bad header {echoed}"}})

    with pytest.raises(InfrastructureError) as info:
        _pool(handler).post("/completions", {})
    assert SECRET not in str(info.value) and "***" in str(info.value)

    def reject(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": f"invalid key {SECRET}"}})

    with pytest.raises(RequestRejected) as rejected:
        _pool(reject).post("/completions", {})
    assert SECRET not in str(rejected.value) and SECRET not in rejected.value.detail


def test_requests_spread_over_endpoints_and_a_failing_one_is_marked_down() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "b.test":
            return httpx.Response(502)
        return httpx.Response(200, json={"choices": [{"text": json.loads(request.content)["i"]}]})

    pool = _pool(handler, (A, B))
    out = pool.map("/completions", [{"i": i} for i in range(20)], expect="choices")
    assert [o["choices"][0]["text"] for o in out] == list(range(20))  # in order, none lost
    assert [e.down for e in pool.endpoints] == [False, True]
    # its retries (each request in flight there at most 3 attempts), then everything went to a
    assert 3 <= pool.endpoints[1].requests <= 3 * 4
    assert "502" in pool.endpoints[1].last_error


def test_healthy_endpoints_share_the_load() -> None:
    handler, seen = _script(httpx.Response(200, json=OK))
    pool = _pool(handler, (A, B), max_concurrency=1)
    pool.map("/completions", [{} for _ in range(10)])
    assert Counter(seen) == {"a.test": 5, "b.test": 5}


def test_first_failure_in_a_batch_stops_it_and_keeps_endpoints_up() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["i"] == 3:
            return httpx.Response(400, json={"error": {"message": "bad item"}})
        return httpx.Response(200, json=OK)

    pool = _pool(handler)
    with pytest.raises(RequestRejected, match="bad item"):
        pool.map("/completions", [{"i": i} for i in range(8)])
    assert not pool.endpoints[0].down
    assert pool.post("/completions", {"i": 0}) == OK


def test_backoff_is_exponential_jittered_and_capped() -> None:
    delays = [_retry_delay(_Retryable("x"), attempt, 0.5, 4.0) for attempt in range(8) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays)
    first = [_retry_delay(_Retryable("x"), 0, 0.5, 4.0) for _ in range(200)]
    assert max(first) <= 0.5 and len(set(first)) > 1  # jittered
    assert _retry_delay(_Retryable("x", "2"), 0, 0.5, 4.0) == 2.0
    assert _retry_delay(_Retryable("x", "soon"), 0, 0.0, 4.0) == 0.0


def test_imap_yields_each_result_as_it_completes_and_stops_at_the_first_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        n = json.loads(request.content)["n"]
        return httpx.Response(400 if n == 7 else 200, json={"choices": [{"text": str(n)}]})

    pool = _pool(handler)
    got = dict(pool.imap("/completions", [{"n": n} for n in range(6)], expect="choices"))
    assert sorted(got) == list(range(6)) and all(got[n]["choices"][0]["text"] == str(n) for n in got)
    done: list[int] = []
    one_at_a_time = _pool(handler, max_concurrency=1)
    with pytest.raises(RequestRejected):
        for index, _ in one_at_a_time.imap("/completions", [{"n": n} for n in (1, 7, 2)], expect="choices"):
            done.append(index)
    assert done == [0]  # the request that finished before the failure was handed over; the last never ran
