"""Helpers shared by the local-weights backends (vllm, hf): model identity and lm-eval encoding.

Nothing here imports torch or vllm at module import time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.base import (
    GenerationRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    SamplingParams,
    ScoreRequest,
    TokenScores,
)
from harness.errors import HarnessError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# Hashing every byte costs about 1 s per 600 MB here; above this total only size and the first and
# last MiB of each weight file are hashed (still changes with any re-save or fine-tune in practice).
FULL_HASH_LIMIT = 2 << 30
_MIB = 1 << 20


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded, without importing torch (seconds)."""
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()


def resolve_model_dir(path: str) -> Path:
    """A local model folder for `path`: the folder itself, or a hub id resolved via the local cache."""
    local = Path(path).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise HarnessError(
                f"model folder {local} has no config.json: point to a transformers model folder"
            )
        return local
    if local.exists() or path.startswith((".", "/", "~")):
        raise HarnessError(f"model path {path!r} is not a folder: give a model folder or a hub id")
    try:
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        return Path(snapshot_download(path, local_files_only=offline))
    except Exception as exc:  # noqa: BLE001 - any hub failure means the same thing to the user
        raise HarnessError(
            f"model {path!r} is neither a local folder nor a downloadable hub id ({type(exc).__name__}): "
            "check the path, or download it first"
        ) from exc


def _hash_file(h: Any, f: Path, full: bool) -> None:
    size = f.stat().st_size
    h.update(f"{f.name}:{size}:".encode())
    with f.open("rb") as fh:
        if full:
            while chunk := fh.read(16 * _MIB):
                h.update(chunk)
        else:
            h.update(fh.read(_MIB))
            fh.seek(max(size - _MIB, 0))
            h.update(fh.read(_MIB))


def weight_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def weights_stat(model_dir: Path) -> list[tuple[str, int, int, int, int]]:
    """Name, size, inode, mtime and ctime of config.json and every weight file: any write to one of them,
    a replaced file or a touched one changes it (ctime cannot be set back by a copy tool, as mtime can)."""
    stats = []
    for f in [model_dir / "config.json", *weight_files(model_dir)]:
        st = f.stat()
        stats.append((f.name, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    return stats


_FINGERPRINTS: dict[tuple[str, str], tuple[str, str]] = {}  # (folder, its weights_stat) -> fingerprint


def _memo_key(model_dir: Path, stats: list[tuple[str, int, int, int, int]]) -> tuple[str, str]:
    return str(model_dir.resolve()), repr(stats)


def _method(stats: list[tuple[str, int, int, int, int]]) -> str:
    """ "full" when the weight files (every entry after config.json) are small enough to hash whole."""
    return "full" if sum(size for _, size, *_ in stats[1:]) <= FULL_HASH_LIMIT else "sampled"


def remember_fingerprint(model_dir: Path, stats: list[tuple[str, int, int, int, int]], value: str) -> None:
    """Tell this process a folder's fingerprint, known elsewhere for these `weights_stat` (the lazy
    backend's memo in the cache), so the engine it starts does not hash the weights again."""
    _FINGERPRINTS[_memo_key(model_dir, stats)] = (value, _method(stats))


def fingerprint(model_dir: Path) -> tuple[str, str]:
    """(sha256 hex, method) over config.json and the weight files; method is "full" or "sampled".

    Remembered in this process by the files' stat: the lazy backend and the engine it starts both ask,
    and hashing the demo teacher's 0.5 GB takes about a second."""
    stats = weights_stat(model_dir)
    key = _memo_key(model_dir, stats)
    if key not in _FINGERPRINTS:
        method = _method(stats)
        h = hashlib.sha256()
        h.update((model_dir / "config.json").read_bytes())
        for f in weight_files(model_dir):
            _hash_file(h, f, method == "full")
        _FINGERPRINTS[key] = (h.hexdigest(), method)
    return _FINGERPRINTS[key]


def tokenizer_id(tokenizer: Any) -> str:
    """sha256 of the id -> token table (added tokens included): equal ids mean token-level KD is valid."""
    vocab = tokenizer.get_vocab()
    table = sorted((int(i), str(t)) for t, i in vocab.items())
    return hashlib.sha256(json.dumps(table, ensure_ascii=False).encode()).hexdigest()


def n_parameters_from_safetensors(model_dir: Path) -> int | None:
    """Count parameters from safetensors headers without loading any tensor."""
    files = [f for f in weight_files(model_dir) if f.suffix == ".safetensors"]
    if not files:
        return None
    total = 0
    for f in files:
        with f.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for name, meta in header.items():
            if name != "__metadata__":
                total += int(np.prod(meta["shape"], dtype=np.int64))
    return total


def max_context_from_config(model_dir: Path) -> int:
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    return 2048


def encode_pair(
    encode: Callable[[str], list[int]], context: str, continuation: str, prefix_id: int
) -> tuple[list[int], list[int]]:
    """lm-eval's split of (context, continuation) into token ids.

    Trailing whitespace of the context moves to the continuation; the pair is encoded as a whole
    and the continuation is whatever follows the context's own encoding. An empty context becomes
    `[prefix_id]` (BOS, or EOS when there is no BOS), as lm-eval does.
    """
    if not continuation:
        raise HarnessError("loglikelihood request has an empty continuation: give the text to score")
    if not context:
        return [prefix_id], encode(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(context + continuation)
    ctx = encode(context)
    return ctx, whole[len(ctx) :]


def prefix_token_id(tokenizer: Any) -> int:
    for tok_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    raise HarnessError("tokenizer has neither a BOS nor an EOS token: cannot score an empty context")


def validate_score_request(req: ScoreRequest, vocab_size: int) -> None:
    n = len(req.token_ids)
    if not 1 <= req.start < n:
        raise HarnessError(f"ScoreRequest.start={req.start} must be in [1, {n - 1}] for {n} tokens")
    if req.target_ids is not None and len(req.target_ids) != n - req.start:
        raise HarnessError(
            f"ScoreRequest.target_ids has {len(req.target_ids)} rows, expected one per scored position "
            f"({n - req.start})"
        )
    bad = [t for t in req.token_ids if not 0 <= t < vocab_size]
    if bad:
        raise HarnessError(f"ScoreRequest has token ids outside the vocabulary [0, {vocab_size}): {bad[:5]}")


def target_matrix(target_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Rows of ids padded with -1 to a rectangle (int64)."""
    width = max((len(r) for r in target_ids), default=0)
    out = np.full((len(target_ids), max(width, 1)), -1, dtype=np.int64)
    for i, row in enumerate(target_ids):
        out[i, : len(row)] = row
    return out


def check_max_tokens(requests: list[GenerationRequest]) -> None:
    for r in requests:
        if r.params.max_tokens < 1:
            raise HarnessError(f"SamplingParams.max_tokens={r.params.max_tokens}: must be >= 1")


def stop_cut(text: str, stops: Sequence[str]) -> int:
    """Index of the first stop string in text, or -1."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def final_text(decode: Callable[[list[int]], str], token_ids: Sequence[int], stops: Sequence[str]) -> str:
    """The generated text both backends report: the decoded ids, cut before the first stop string.

    Decoding the ids (rather than taking vLLM's incremental text) keeps a trailing partial UTF-8
    character as U+FFFD in both engines, so equal token ids always give equal text.
    """
    text = decode(list(token_ids))
    cut = stop_cut(text, stops)
    return text if cut < 0 else text[:cut]


def group_by_params(requests: list[GenerationRequest]) -> dict[SamplingParams, list[int]]:
    """Request indices grouped by identical sampling parameters (insertion order kept)."""
    groups: dict[SamplingParams, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r.params, []).append(i)
    return groups


class TokenizerText:
    """Methods shared by backends that hold a transformers tokenizer as `self._tok` and score tokens."""

    _tok: Any
    _path: str

    def score_tokens(self, requests: list[ScoreRequest]) -> list[TokenScores]:
        raise NotImplementedError

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """lm-eval semantics: continuation tokens are those of context+continuation after the context's."""
        prefix = prefix_token_id(self._tok)

        def enc(text: str) -> list[int]:
            return list(self._tok.encode(text, add_special_tokens=False))

        pairs = [encode_pair(enc, r.context, r.continuation, prefix) for r in requests]
        score_reqs = [ScoreRequest(token_ids=tuple(c + x), start=len(c), top_k=1) for c, x in pairs]
        results = []
        for (_, cont), s in zip(pairs, self.score_tokens(score_reqs), strict=True):
            greedy = bool(np.all(s.topk_ids[:, 0] == np.asarray(cont)))
            results.append(Loglikelihood(float(s.token_logprobs.sum()), greedy, len(cont)))
        return results

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [list(self._tok.encode(t, add_special_tokens=False)) for t in texts]

    def detokenize(self, token_ids: list[int]) -> str:
        return str(self._tok.decode(token_ids, skip_special_tokens=True))

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not getattr(self._tok, "chat_template", None):
            raise HarnessError(
                f"model {self._path} has no chat template: use a plain-prompt suite or add one"
            )
        out = self._tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(out)
