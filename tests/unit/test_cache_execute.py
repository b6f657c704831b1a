"""The response cache and the executor: dedupe, cache hits, chunked commits, resume after a crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.backends.base import Generation, GenerationRequest, SamplingParams
from harness.backends.mock import MockBackend
from harness.execute import run_requests
from harness.store.cache import ResponseCache, blob_key, request_key
from harness.suites.base import Request, Response

PARAMS = SamplingParams(max_tokens=16, stop=("\n",))


def _requests(n: int) -> list[Request]:
    return [Request(kind="generate", prompt=f"question {i}: say word{i}", params=PARAMS) for i in range(n)]


def test_request_key_depends_on_model_and_params() -> None:
    request = _requests(1)[0]
    other = Request(
        kind="generate", prompt=request.prompt, params=SamplingParams(max_tokens=17, stop=("\n",))
    )
    assert request_key("a", request) == request_key("a", request)
    assert request_key("a", request) != request_key("b", request)
    assert request_key("a", request) != request_key("a", other)


def test_cache_round_trip(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    response = Response(text="hi", token_ids=(1, 2), finish_reason="stop")
    cache.put_many("m", [("k1", response)])
    assert cache.get_many(["k1", "missing"]) == {"k1": response}
    arrays = {"x": np.arange(5, dtype=np.float32)}
    cache.put_arrays_many("m", [(blob_key("a", 1), arrays)])
    loaded = cache.get_arrays(blob_key("a", 1))
    assert loaded is not None and np.array_equal(loaded["x"], arrays["x"])
    assert cache.get_arrays(blob_key("a", 2)) is None


def test_run_requests_dedupes_and_uses_cache(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    backend = MockBackend("m")
    requests = _requests(10) + _requests(10)  # every request twice
    answers, stats = run_requests(backend, "fp", requests, cache, chunk_size=4)
    assert stats.total == 10 and stats.computed == 10 and backend.requests_seen["generate"] == 10
    assert backend.calls["generate"] == 3  # chunks of 4, 4, 2
    assert answers[requests[3]].text == " word3"
    again, stats2 = run_requests(backend, "fp", requests, cache, chunk_size=4)
    assert stats2.from_cache == 10 and stats2.computed == 0 and backend.requests_seen["generate"] == 10
    assert again == answers


def test_crash_loses_only_the_chunk_in_flight(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    requests = _requests(10)
    crashing = MockBackend("m", fail_after=2)
    with pytest.raises(RuntimeError):
        run_requests(crashing, "fp", requests, cache, chunk_size=4)
    assert cache.count() == 8  # two committed chunks survive the crash
    resumed = MockBackend("m")
    answers, stats = run_requests(resumed, "fp", requests, cache, chunk_size=4)
    assert stats.from_cache == 8 and stats.computed == 2 and resumed.requests_seen["generate"] == 2
    fresh, _ = run_requests(MockBackend("m"), "fp", requests, ResponseCache(tmp_path / "d.sqlite"))
    assert answers == fresh


def test_loglikelihood_requests(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    requests = [
        Request(kind="loglikelihood", prompt="The sky is", continuation=c) for c in (" blue", " green")
    ]
    answers, _ = run_requests(MockBackend("m"), "fp", requests, cache)
    assert all(answers[r].logprob < 0 for r in requests)
    assert answers[requests[0]].logprob != answers[requests[1]].logprob


class StreamingMock(MockBackend):
    """Answers one request at a time, last request first (the order a real engine finishes them in
    is not the order asked), and can die after `die_after` answers."""

    def __init__(self, name: str, die_after: int | None = None) -> None:
        super().__init__(name)
        self.die_after = die_after
        self.streamed = 0

    def generate_stream(self, requests: list[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        for index in reversed(range(len(requests))):
            if self.die_after is not None and self.streamed >= self.die_after:
                raise RuntimeError("engine died")
            self.streamed += 1
            yield index, super().generate([requests[index]])[0]


def test_streaming_backend_gets_one_queue_and_commits_in_groups(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    requests = _requests(10)
    answers, stats = run_requests(StreamingMock("m"), "fp", requests, cache, chunk_size=3)
    expected, _ = run_requests(MockBackend("m"), "fp", requests, ResponseCache(tmp_path / "d.sqlite"))
    assert answers == expected  # matched to the right requests despite the reversed order
    assert stats.computed == 10 and stats.generated_tokens == sum(len(a.token_ids) for a in answers.values())
    dying = StreamingMock("m", die_after=7)
    fresh = ResponseCache(tmp_path / "e.sqlite")
    with pytest.raises(RuntimeError, match="engine died"):
        run_requests(dying, "fp", requests, fresh, chunk_size=3)
    assert fresh.count() == 7  # two groups of 3, and the 7th answer, finished before the engine died
    resumed = StreamingMock("m")
    again, stats2 = run_requests(resumed, "fp", requests, fresh, chunk_size=3)
    assert stats2.from_cache == 7 and resumed.streamed == 3 and again == expected
