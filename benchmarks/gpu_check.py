"""GPU check of the transformers backend: same numbers as on the CPU, and how fast the KD check runs.

Run on a machine with CUDA (no network needed; it builds its own models):
    python benchmarks/gpu_check.py --out gpu_check.json
It (1) builds the tiny test model and checks that HFBackend on cuda (float32) matches the CPU
(teacher-forced full-vocabulary logprobs, greedy tokens, log-likelihoods); (2) builds a random model
shaped like SmolLM2-135M (30 layers, width 576, vocab 49,152) and times teacher-forced full-vocabulary
scoring and the divergence maths for the exact KD check, printing positions per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.backends.base import GenerationRequest, LoglikelihoodRequest, SamplingParams, ScoreRequest  # noqa: E402
from harness.backends.hf import HFBackend  # noqa: E402
from harness.metrics.divergence import full_vocab_divergences  # noqa: E402
from tests.tiny_model import build_tiny_model  # noqa: E402


def parity(workdir: Path) -> dict[str, float | bool]:
    """The tiny model on cpu and cuda, float32: logprobs, greedy tokens and log-likelihoods agree."""
    path = build_tiny_model(workdir / "tiny")
    cpu, gpu = HFBackend(str(path), device="cpu"), HFBackend(str(path), device="cuda", dtype="float32")
    prompts = ["the cat has 3 apples and", "what is the answer to the question", "a big red tree"]
    ids = cpu.tokenize(prompts)
    requests = [ScoreRequest(tuple(i), 1, top_k=5, full_vocab=True) for i in ids]
    a, b = cpu.score_tokens(requests), gpu.score_tokens(requests)
    max_diff = max(float(np.abs(x.full_logprobs - y.full_logprobs).max()) for x, y in zip(a, b, strict=True))
    params = SamplingParams(max_tokens=16)
    gen_a = cpu.generate([GenerationRequest(p, params) for p in prompts])
    gen_b = gpu.generate([GenerationRequest(p, params) for p in prompts])
    ll = [LoglikelihoodRequest(p, " the answer") for p in prompts]
    pairs = zip(cpu.loglikelihood(ll), gpu.loglikelihood(ll), strict=True)
    ll_diff = max(abs(x.logprob - y.logprob) for x, y in pairs)
    return {
        "full_logprobs_max_abs_diff": max_diff,
        "greedy_tokens_equal": all(x.token_ids == y.token_ids for x, y in zip(gen_a, gen_b, strict=True)),
        "loglikelihood_max_abs_diff": ll_diff,
    }


def smollm_shaped(workdir: Path) -> Path:
    """A random model with SmolLM2-135M's shape, saved with the tiny model's tokenizer files replaced."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    out = workdir / "smollm-shaped"
    LlamaForCausalLM(config).save_pretrained(out)
    tiny = build_tiny_model(workdir / "tok")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((tiny / name).read_bytes())
    return out


def kd_speed(path: Path, n_seq: int, length: int, dtype: str) -> dict[str, float]:
    import torch

    backend = HFBackend(str(path), device="cuda", dtype=dtype, batch_size=16)
    rng = np.random.default_rng(0)
    seqs = [tuple(int(x) for x in rng.integers(3, 700, size=length)) for _ in range(n_seq)]
    requests = [ScoreRequest(s, 16, full_vocab=True) for s in seqs]
    backend.score_tokens(requests[:2])  # warm-up
    torch.cuda.synchronize()
    started = time.perf_counter()
    scores = backend.score_tokens(requests)
    score_s = time.perf_counter() - started
    positions = sum(s.n_positions for s in scores)
    started = time.perf_counter()
    for s in scores:
        assert s.full_logprobs is not None
        full_vocab_divergences(s.full_logprobs, s.full_logprobs[::-1].copy(), T=2.0)
    div_s = time.perf_counter() - started
    return {
        "positions": positions,
        "score_seconds": score_s,
        "score_positions_per_s": positions / score_s,
        "divergence_seconds": div_s,
        "divergence_positions_per_s": positions / div_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args()
    import torch

    result: dict[str, object] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result["parity"] = parity(work)
        print(json.dumps(result, indent=2), flush=True)
        shaped = smollm_shaped(work)
        for dtype in ("float32", "bfloat16"):
            result[f"kd_speed_{dtype}"] = kd_speed(shaped, args.sequences, args.length, dtype)
            print(dtype, json.dumps(result[f"kd_speed_{dtype}"]), flush=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
