"""A local-weights backend whose engine starts only when work needs it.

A re-run, or a nightly run whose teacher has not changed, finds most answers in the response cache.
Starting an engine for them costs seconds to minutes (vLLM's start-up dominates small runs), so the
model is represented by a proxy until a request misses the cache:

- its identity (ModelInfo, Capabilities) comes from the cache, keyed by the weights' fingerprint, the
  backend, the engine arguments and the kind of machine; the first run that starts the engine stores it;
- tokenize, detokenize and chat templates use the model folder's own tokenizer, loaded alone (the same
  transformers tokenizer both local backends use; its vocabulary hash must equal the recorded one,
  otherwise the engine is started and its answer used);
- everything else starts the engine on first use, and records what starting it cost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.backends import _common as common
from harness.backends.base import (
    Backend,
    Capabilities,
    Generation,
    GenerationRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    ModelInfo,
    ScoreRequest,
    TokenScores,
)
from harness.store.cache import ResponseCache, blob_key

META_VERSION = 1  # bump when ModelInfo or Capabilities change meaning
LAZY_BACKENDS = ("vllm", "hf")  # backends whose model is a local folder with its own tokenizer


def _machine_kind() -> str:
    """cuda or cpu, without importing torch (seconds): engines pick dtypes and limits by it."""
    return "cuda" if common.nvidia_driver_present() else "cpu"


def remembered_fingerprint(model_dir: Path, cache: ResponseCache) -> str:
    """The weights' fingerprint (common.fingerprint), remembered in the cache by the files' stat.

    Hashing the demo teacher's 0.5 GB took 1.3 s, a third of a re-run that starts no engine. The memo
    is keyed by the folder and, for config.json and every weight file, its name, size, inode, mtime and
    ctime: any write to a file, a replaced file or a touched one computes the hash again (ctime
    cannot be set back by a copy tool, as mtime can).
    """
    stats = common.weights_stat(model_dir)
    key = blob_key("fingerprint-memo", str(model_dir.resolve()), stats)
    found = cache.get_json(key)
    if isinstance(found, dict) and isinstance(found.get("fingerprint"), str):
        common.remember_fingerprint(model_dir, stats, str(found["fingerprint"]))
        return str(found["fingerprint"])
    fingerprint, _ = common.fingerprint(model_dir)
    cache.put_json(fingerprint, key, {"fingerprint": fingerprint})
    return fingerprint


def meta_key(backend: str, fingerprint: str, engine_args: dict[str, Any]) -> str:
    args = json.dumps(engine_args, sort_keys=True, default=str)
    return blob_key("engine-meta", META_VERSION, backend, fingerprint, args, _machine_kind())


class _TokenizerOnly(common.TokenizerText):
    def __init__(self, tokenizer: Any, path: str) -> None:
        self._tok = tokenizer
        self._path = path


Loader = Callable[[], tuple[Backend, float, int | None]]  # the backend, seconds to start, memory added


_OWN = frozenset(
    {"_engine", "_load", "_engine_class", "_cache", "_info", "_caps", "on_start", "_call_engine"}
)


class LazyBackend:
    """Stands for the backend `load` starts; `started` says whether it ever did."""

    def __init__(
        self,
        backend: str,
        path: str,
        engine_args: dict[str, Any],
        load: Loader,
        engine_class: type,
        cache: ResponseCache,
    ) -> None:
        self._path = path
        self._load = load
        self._engine_class = engine_class
        self._cache = cache
        self._engine: Backend | None = None
        self.on_start: Callable[[float, int | None], None] | None = None  # told the start's cost
        self._tokenizer: Any = None
        self.load_seconds: float | None = None  # of the engine, once started
        self.rss_delta: int | None = None
        self._model_dir = common.resolve_model_dir(path)
        fingerprint = remembered_fingerprint(self._model_dir, cache)
        self._key = meta_key(backend, fingerprint, engine_args)
        self._fingerprint = fingerprint
        meta = cache.get_json(self._key)
        self._info = ModelInfo(**meta["info"]) if meta else None
        self._caps = Capabilities(**meta["capabilities"]) if meta else None
        self._tokenizer_class: str = meta.get("tokenizer_class", "") if meta else ""

    @property
    def started(self) -> bool:
        return self._engine is not None

    def engine(self) -> Backend:
        """The real backend, started on first call."""
        if self._engine is None:
            self._engine, self.load_seconds, self.rss_delta = self._load()
            if self.on_start is not None:
                self.on_start(self.load_seconds, self.rss_delta)
            info, caps = self._engine.info(), self._engine.capabilities()
            meta = {
                "info": dataclasses.asdict(info),
                "capabilities": dataclasses.asdict(caps),
                "tokenizer_class": type(getattr(self._engine, "_tok", None)).__name__,
            }
            self._cache.put_json(info.fingerprint, self._key, meta)
            self._info, self._caps = info, caps
        return self._engine

    # ---- identity: from the cache when known ------------------------------------------------
    def info(self) -> ModelInfo:
        return self._info if self._info is not None else self.engine().info()

    def capabilities(self) -> Capabilities:
        return self._caps if self._caps is not None else self.engine().capabilities()

    # ---- text: the folder's tokenizer alone --------------------------------------------------
    @property
    def _tok(self) -> Any:
        """The tokenizer (compare reads backends' `_tok` for vocabulary checks)."""
        if self._engine is not None:
            return getattr(self._engine, "_tok", None)
        if self._tokenizer is None:
            tokenizer = self._folder_tokenizer()
            if self._info is None or common.tokenizer_id(tokenizer) != self._info.tokenizer_id:
                return getattr(self.engine(), "_tok", None)
            self._tokenizer = tokenizer
        return self._tokenizer

    def _folder_tokenizer(self) -> Any:
        """The folder's tokenizer, of the class the engine used. The generic fast tokenizer loads in
        about a second; AutoTokenizer imports torch and every model family first (15 s on 2 cores)."""
        from transformers import PreTrainedTokenizerFast

        if self._tokenizer_class.endswith(PreTrainedTokenizerFast.__name__):
            return PreTrainedTokenizerFast.from_pretrained(str(self._model_dir))
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self._model_dir))

    def _text(self) -> Any:
        return self._engine if self._engine is not None else _TokenizerOnly(self._tok, self._path)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self._text().tokenize(texts)

    def detokenize(self, token_ids: list[int]) -> str:
        return self._text().detokenize(token_ids)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self._text().apply_chat_template(messages, add_generation_prompt)

    # ---- work: the engine --------------------------------------------------------------------
    @property
    def can_stream(self) -> bool:
        """Whether the engine answers generations as they finish (harness.execute asks)."""
        return hasattr(self._engine_class, "generate_stream")

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        return self.engine().generate(requests)

    def generate_stream(self, requests: list[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        return self.engine().generate_stream(requests)  # type: ignore[attr-defined]

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[Loglikelihood]:
        return self.engine().loglikelihood(requests)

    def score_tokens(self, requests: list[ScoreRequest]) -> list[TokenScores]:
        return self.engine().score_tokens(requests)

    def __getattr__(self, name: str) -> Any:
        """Anything else a backend offers (hidden states, ...) is the engine's. Before it starts, only what
        its class defines exists (so `hasattr` starts nothing), and a method starts it when called."""
        if name.startswith("__") or name in _OWN:
            raise AttributeError(name)
        if self._engine is None:
            attribute = getattr(self._engine_class, name, None)
            if attribute is None:
                raise AttributeError(f"{self._engine_class.__name__} has no attribute {name!r}")
            if callable(attribute):
                return functools.partial(self._call_engine, name)
        return getattr(self.engine(), name)

    def _call_engine(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.engine(), name)(*args, **kwargs)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        with contextlib.suppress(Exception):
            self._cache.close()
