"""The KD check's own cost: divergence maths throughput, its working set, and its share of the scoring.

Three parts (each median over --reps repetitions, one thread unless --threads):
1. `maths`  positions/s of the divergence maths on synthetic logprobs (vocabulary --vocab, SmolLM2's
            49,152): full vocabulary at T = 1 and T = 2; top-k + tail from two top-k lists (k = 20, 256:
            what an API gives); the teacher's top-k against the student's FULL distribution (the
            lower-bound mode on hf/vLLM students).
2. `memory` peak memory allocated by the exact check itself (`harness.kd.exact_divergences` with two
            synthetic full-vocabulary "models" that return random logprobs, so no weights), traced with
            tracemalloc (numpy reports its buffers to it), for 1k, 4k and 16k scored positions in
            64-position sequences: O(batch) means the peak does not grow with the positions.
3. `share`  on real models (--teacher/--student, e.g. the demo's): teacher-forced full-vocabulary scoring
            of --n-seq sequences of --prompt-len + --gen-len tokens, timing each model's forward passes
            (`score_tokens`) and the divergence maths at --temperatures separately: maths / forwards.
4. `cka`    seconds for the 31 x 31 linear-CKA matrix of SmolLM2-135M-sized hidden states (random) at
            512, 1,024 (the default --kd-cka-positions) and 2,048 positions.
5. `long`   peak RSS above the loaded teacher while scoring --n-long prompts of --long-prompt-len tokens
            with --gen-len scored tokens each (lm-eval loglikelihood / BBH-like), with and without
            transformers' `logits_to_keep` (logits only for the scored positions).

    python benchmarks/bench_kd.py --teacher models/demo/teacher --student models/demo/student --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.backends.base import Capabilities, ScoreRequest, TokenScores  # noqa: E402
from harness.kd import KDSequence, exact_divergences  # noqa: E402
from harness.metrics.divergence import (  # noqa: E402
    full_vocab_divergences,
    student_full_vs_teacher_topk,
    truncated_divergences,
)
from harness.store.cache import ResponseCache  # noqa: E402


def median_time(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _normalise(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    log_total = np.log(np.exp(logits - top, dtype=np.float64).sum(axis=1, keepdims=True))
    return (logits - top - log_total).astype(np.float32)


def _logprobs(rng: np.random.Generator, n: int, vocab: int, scale: float = 3.0) -> np.ndarray:
    return _normalise(rng.standard_normal((n, vocab), dtype=np.float32) * np.float32(scale))


def _topk(lp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.argpartition(-lp, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(lp, ids, axis=1)
    order = np.argsort(-vals, axis=1)
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(vals, order, axis=1)


def bench_maths(vocab: int, n: int, reps: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    teacher = _logprobs(rng, n, vocab)
    student = _normalise(teacher + rng.standard_normal(teacher.shape, dtype=np.float32))
    rows: list[dict[str, Any]] = []
    for t in (1.0, 2.0):
        sec = median_time(lambda t=t: full_vocab_divergences(teacher, student, T=t), reps)
        rows.append(
            {"mode": f"full vocabulary, T={t:g}", "positions": n, "seconds": sec, "pos_per_s": n / sec}
        )
    for k in (20, 256):
        ids, t_lp = _topk(teacher, k)
        s_lp = np.take_along_axis(student, ids, axis=1)
        sec = median_time(lambda ids=ids, t_lp=t_lp, s_lp=s_lp: truncated_divergences(ids, t_lp, s_lp), reps)
        rows.append(
            {"mode": f"top-{k} + tail (both top-k)", "positions": n, "seconds": sec, "pos_per_s": n / sec}
        )
        sec = median_time(lambda ids=ids, t_lp=t_lp: student_full_vs_teacher_topk(ids, t_lp, student), reps)
        rows.append(
            {
                "mode": f"teacher top-{k} + tail vs student full",
                "positions": n,
                "seconds": sec,
                "pos_per_s": n / sec,
            }
        )
    return rows


class SyntheticModel:
    """A 'model' that returns seeded random full-vocabulary logprobs: the check's memory without weights."""

    def __init__(self, vocab: int, seed: int) -> None:
        self.vocab, self.seed = vocab, seed

    def capabilities(self) -> Capabilities:
        return Capabilities(full_vocab_logprobs=True, max_top_k=self.vocab)

    def score_tokens(self, requests: list[ScoreRequest]) -> list[TokenScores]:
        out = []
        for r in requests:
            n = len(r.token_ids) - r.start
            rng = np.random.default_rng([self.seed, len(r.token_ids), r.token_ids[0]])
            lp = _logprobs(rng, n, self.vocab)
            actual = np.asarray(r.token_ids[r.start :])
            out.append(
                TokenScores(
                    token_logprobs=lp[np.arange(n), actual],
                    topk_ids=np.zeros((n, 0), dtype=np.int64),
                    topk_logprobs=np.zeros((n, 0), dtype=np.float32),
                    full_logprobs=lp,
                )
            )
        return out


def bench_memory(vocab: int, totals: list[int], seq_positions: int) -> list[dict[str, Any]]:
    rows = []
    for total in totals:
        n_seq = total // seq_positions
        sequences = [
            KDSequence(
                f"kd-{i}",
                tuple([i % vocab, *range(1, 8)] + [(i + j) % vocab for j in range(seq_positions)]),
                8,
            )
            for i in range(n_seq)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            cache = ResponseCache(Path(tmp) / "c.sqlite")
            teacher, student = SyntheticModel(vocab, 1), SyntheticModel(vocab, 2)
            tracemalloc.start()
            started = time.perf_counter()
            scores = exact_divergences(teacher, student, ("t", "s"), sequences, [1.0], cache)  # type: ignore[arg-type]
            seconds = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            cache.close()
        n_pos = sum(len(d) for d in scores.per_t[1.0])
        rows.append({"positions": n_pos, "sequences": n_seq, "peak_mib": peak / 2**20, "seconds": seconds})
    return rows


def bench_share(args: argparse.Namespace) -> dict[str, Any]:
    from harness.backends.hf import HFBackend

    teacher = HFBackend(args.teacher, dtype="float32", device="cpu", batch_size=args.hf_batch)
    student = HFBackend(args.student, dtype="float32", device="cpu", batch_size=args.hf_batch)
    rng = np.random.default_rng(0)
    vocab = teacher.info().vocab_size
    sequences = [
        tuple(int(x) for x in rng.integers(100, vocab - 1, args.prompt_len + args.gen_len))
        for _ in range(args.n_seq)
    ]
    requests = [ScoreRequest(s, args.prompt_len, full_vocab=True) for s in sequences]
    temps = [float(t) for t in args.temperatures.split(",")]
    forwards, maths = [], []
    for _ in range(args.reps):
        started = time.perf_counter()
        t_scores = teacher.score_tokens(requests)
        s_scores = student.score_tokens(requests)
        forwards.append(time.perf_counter() - started)
        started = time.perf_counter()
        for t_sc, s_sc in zip(t_scores, s_scores, strict=True):
            for t in temps:
                full_vocab_divergences(t_sc.full_logprobs, s_sc.full_logprobs, T=t)  # type: ignore[arg-type]
        maths.append(time.perf_counter() - started)
        del t_scores, s_scores
    teacher.close()
    student.close()
    f, m = statistics.median(forwards), statistics.median(maths)
    positions = args.n_seq * args.gen_len
    return {
        "positions": positions,
        "temperatures": temps,
        "forwards_seconds": forwards,
        "maths_seconds": maths,
        "forwards_median": f,
        "maths_median": m,
        "maths_share_of_forwards": m / f,
        "maths_share_of_total": m / (f + m),
        "forward_positions_per_s": positions / f,
        "maths_positions_per_s": positions / m,
    }


def bench_cka(positions: list[int], layers: int, hidden: int, reps: int) -> list[dict[str, Any]]:
    """Seconds for a layers x layers linear-CKA matrix (float64) over random float32 features."""
    from harness.metrics.cka import cka_matrix

    rng = np.random.default_rng(0)
    rows = []
    for n in positions:
        a = [rng.standard_normal((n, hidden), dtype=np.float32) for _ in range(layers)]
        b = [rng.standard_normal((n, hidden), dtype=np.float32) for _ in range(layers)]
        rows.append(
            {
                "positions": n,
                "layers": layers,
                "hidden": hidden,
                "seconds": median_time(lambda a=a, b=b: cka_matrix(a, b), reps),
            }
        )
    return rows


def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def long_prompt_child(args: argparse.Namespace, keep: bool) -> dict[str, Any]:
    """One setting of part `long`, in its own process (the allocator's reuse would hide a second peak)."""
    from harness.backends.hf import HFBackend

    teacher = HFBackend(args.teacher, dtype="float32", device="cpu", batch_size=args.hf_batch)
    teacher._keeps_logits = keep
    rng = np.random.default_rng(1)
    vocab, n_prompt = teacher.info().vocab_size, args.long_prompt_len
    requests = [
        ScoreRequest(
            tuple(int(x) for x in rng.integers(100, vocab - 1, n_prompt + args.gen_len)), n_prompt, top_k=1
        )
        for _ in range(args.n_long)
    ]
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak (VmHWM) to the current RSS
    before = _rss_kib("VmRSS")
    started = time.perf_counter()
    teacher.score_tokens(requests)
    seconds = time.perf_counter() - started
    return {
        "logits_to_keep": keep,
        "peak_above_model_mib": (_rss_kib("VmHWM") - before) / 1024,
        "seconds": seconds,
    }


def bench_long_prompts(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Peak RSS above the loaded model while scoring long prompts with a short scored tail (BBH-like),
    with and without `logits_to_keep`, each setting a fresh process; medians over --reps."""
    import subprocess

    rows = []
    for keep in (True, False):
        runs = []
        for _ in range(args.reps):
            cmd = [sys.executable, __file__, "--long-child", "keep" if keep else "full", *sys.argv[1:]]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        rows.append(
            {
                "logits_to_keep": keep,
                "peak_above_model_mib": statistics.median(r["peak_above_model_mib"] for r in runs),
                "seconds": statistics.median(r["seconds"] for r in runs),
                "runs": runs,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="maths,memory,share,cka,long")
    parser.add_argument(
        "--cka-positions", default="512,1024,2048", help="positions per CKA timing (part `cka`)"
    )
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--positions", type=int, default=1024, help="positions per maths timing")
    parser.add_argument("--memory-positions", default="1024,4096,16384")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--teacher", default=str(REPO / "models/demo/teacher"))
    parser.add_argument("--student", default=str(REPO / "models/demo/student"))
    parser.add_argument("--n-seq", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--gen-len", type=int, default=64)
    parser.add_argument("--hf-batch", type=int, default=16)
    parser.add_argument("--temperatures", default="1,2")
    parser.add_argument("--long-prompt-len", type=int, default=1536, help="prompt tokens (part `long`)")
    parser.add_argument("--n-long", type=int, default=8, help="long-prompt sequences scored (part `long`)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--long-child", choices=["keep", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.long_child:
        print(json.dumps(long_prompt_child(args, args.long_child == "keep")))
        return 0
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {"vocab": args.vocab, "threads": args.threads, "reps": args.reps}
    if "maths" in parts:
        result["maths"] = bench_maths(args.vocab, args.positions, args.reps)
        print(f"\nDivergence maths, vocab {args.vocab:,}, {args.positions} positions, median of {args.reps}")
        print(f"{'mode':42s} {'positions/s':>12s} {'vs full T=1':>12s}")
        base = result["maths"][0]["pos_per_s"]
        for row in result["maths"]:
            print(f"{row['mode']:42s} {row['pos_per_s']:12,.0f} {row['pos_per_s'] / base:11.2f}x")
    if "memory" in parts:
        totals = [int(x) for x in args.memory_positions.split(",")]
        result["memory"] = bench_memory(args.vocab, totals, 64)
        print("\nPeak memory of the exact check (tracemalloc), 64-position sequences, T = 1")
        print(f"{'positions':>10s} {'sequences':>10s} {'peak MiB':>10s} {'vs first':>9s} {'seconds':>8s}")
        first = result["memory"][0]["peak_mib"]
        for row in result["memory"]:
            print(
                f"{row['positions']:10,d} {row['sequences']:10d} {row['peak_mib']:10.1f} "
                f"{row['peak_mib'] / first:8.2f}x {row['seconds']:8.1f}"
            )
    if "share" in parts:
        share = result["share"] = bench_share(args)
        print(
            f"\nTeacher-forced scoring on real models: {share['positions']} positions "
            f"({args.n_seq} x {args.gen_len} after a {args.prompt_len}-token prefix), T = {args.temperatures}"
        )
        for name, key in (("forward passes (teacher + student)", "forwards"), ("divergence maths", "maths")):
            runs = ", ".join(f"{x:.2f}" for x in share[f"{key}_seconds"])
            print(f"{name:36s} {share[f'{key}_median']:7.2f} s median ({runs})")
        print(
            f"maths / forwards = {share['maths_share_of_forwards']:.1%}; "
            f"maths share of the whole = {share['maths_share_of_total']:.1%}"
        )
    if "cka" in parts:
        result["cka"] = bench_cka([int(x) for x in args.cka_positions.split(",")], 31, 576, args.reps)
        print("\nLinear CKA matrix, 31 x 31 layers of width 576 (SmolLM2-135M's hidden states)")
        for row in result["cka"]:
            print(f"{row['positions']:6d} positions: {row['seconds']:6.1f} s")
    if "long" in parts:
        result["long"] = bench_long_prompts(args)
        print(
            f"\nLoglikelihood-style scoring of {args.n_long} x {args.long_prompt_len}-token prompts "
            f"+ {args.gen_len} scored tokens (teacher, top-1 only)"
        )
        for row in result["long"]:
            print(
                f"logits_to_keep={row['logits_to_keep']!s:5s}: peak RSS above the model "
                f"{row['peak_above_model_mib']:8.0f} MiB, {row['seconds']:6.1f} s"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
