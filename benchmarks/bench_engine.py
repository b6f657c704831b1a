"""The harness against vLLM used directly, and what a re-run and a nightly run cost; start-up times.

Setups, each a fresh process timed end to end, repetitions interleaved (A B C ... A B C ...):
- `raw`       a script that builds the same generation requests (the harness's suite loader, no engine),
              then for each model starts vLLM's `LLM` with the harness's CPU engine settings and calls
              `LLM.generate` once on every prompt (token ids, the same SamplingParams). No cache, no
              scoring, no record.
- `harness`   `harness compare T S --suite ... --no-kd --no-report`, fresh response cache.
- `rerun`     the same command again on `harness`'s cache: everything is answered from the cache.
- `kd`        `harness compare T S --suite ... --no-report` with the KD check, fresh cache.
- `nightly`   `harness compare T S2 ...` on `kd`'s cache: the teacher has not changed, a new student
              (S2) is compared; the teacher's generations and KD text come from the cache.
- `kd-nocache` `kd` with HARNESS_VLLM_SCORE_CACHE=0: scoring skips vLLM's prefix cache (as before
              harness.backends.vllm_prefix), so every scoring call prefills its contexts again.
Ratios: harness / raw (and the harness's overhead over raw in % of raw's engine time), rerun / harness,
nightly / kd. Start-up: `harness --help` and `import harness.cli` (medians of 5), and for `harness`
the time from the command to its first engine request (the teacher's "suites" progress line).

    python benchmarks/bench_engine.py --teacher models/demo/teacher --student models/demo/student \\
        --student2 models/demo/base --limit 8 --max-gen-tokens 128 --reps 3 --json out.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SETUPS = ("raw", "harness", "rerun", "kd", "nightly", "kd-nocache")
ENGINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ENGINE_ENV)
    env.update(extra or {})
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # both sides use the harness's 2 GiB CPU KV cache
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def timed(
    cmd: Sequence[str], log: Path, marker: str | None = None, env: dict[str, str] | None = None
) -> tuple[float, float | None]:
    """Run to completion; returns wall seconds and the seconds until a stderr line containing `marker`."""
    started = time.perf_counter()
    first: float | None = None
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.Popen(
            cmd, env=child_env(env), cwd=REPO, stdout=handle, stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            if marker and first is None and marker in line:
                first = time.perf_counter() - started
            handle.write(line)
        code = proc.wait()
    seconds = time.perf_counter() - started
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {code}; log {log}:\n{tail}")
    return seconds, first


def suite_args(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for suite in args.suite:
        out += ["--suite", suite]
    return out + ["--limit", str(args.limit), "--max-gen-tokens", str(args.max_gen_tokens)]


def compare_cmd(args: argparse.Namespace, student: Path, out: Path, cache: Path, *, kd: bool) -> list[str]:
    cmd = [sys.executable, "-m", "harness", "compare", str(args.teacher), str(student), *suite_args(args)]
    cmd += ["--no-report", "--cache-dir", str(cache), "--out", str(out), "--backend", "vllm"]
    if not kd:
        return cmd + ["--no-kd"]
    return cmd + ["--kd-max-sequences", str(args.kd_max_sequences), "--kd-mode", args.kd_mode]


def engine_seconds(run_dir: Path) -> dict[str, float]:
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    out: dict[str, float] = {"record_wall": float(manifest["wall_seconds"])}
    for label, entry in manifest["models"].items():
        timings = entry["timings"]
        out[f"{label}_load"] = float(timings["load_seconds"])
        out[f"{label}_requests"] = float(timings["suites"]["seconds"])
    return out


def outputs(run_dir: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (run_dir / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    return {f"{r['model']}|{r['prompt']}": r["output"] for r in rows}


def run_setup(setup: str, args: argparse.Namespace, work: Path, rep: int) -> dict[str, Any]:
    folder = work / f"{setup}-{rep}"
    folder.mkdir()
    if setup == "raw":
        cmd = [sys.executable, str(Path(__file__).resolve()), "_raw", *raw_worker_args(args, folder)]
        seconds, _ = timed(cmd, folder / "log.txt")
        result = json.loads((folder / "raw.json").read_text(encoding="utf-8"))
        return {"seconds": seconds, "phases": result["phases"], "outputs": result["outputs"]}
    student = args.student2 if setup == "nightly" else args.student
    cache_of = {"harness": "harness", "rerun": "harness", "kd": "kd", "nightly": "kd"}.get(setup, setup)
    cache = work / f"cache-{cache_of}-{rep}"
    marker = f"[harness] {args.teacher.name}: suites:"
    seconds, first = timed(
        compare_cmd(args, student, folder / "run", cache, kd=setup.startswith(("kd", "nightly"))),
        folder / "log.txt",
        marker,
        {"HARNESS_VLLM_SCORE_CACHE": "0"} if setup == "kd-nocache" else None,
    )
    phases = engine_seconds(folder / "run")
    if first is not None:
        phases["first_request"] = first
    return {"seconds": seconds, "phases": phases, "outputs": outputs(folder / "run")}


def raw_worker_args(args: argparse.Namespace, folder: Path) -> list[str]:
    out = ["--teacher", str(args.teacher), "--student", str(args.student), "--out", str(folder / "raw.json")]
    return out + suite_args(args)


def render_chat(tok: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """What the harness's backends do to render a chat (harness.backends._common.TokenizerText)."""
    return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt))


def raw_worker(argv: Sequence[str]) -> None:
    """vLLM directly on the harness's requests: one `LLM.generate` call per model."""
    p = argparse.ArgumentParser()
    p.add_argument("--teacher", type=Path)
    p.add_argument("--student", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--suite", action="append")
    p.add_argument("--limit", type=int)
    p.add_argument("--max-gen-tokens", type=int)
    a = p.parse_args(argv)
    started = time.perf_counter()
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from harness.backends.vllm import _engine_defaults
    from harness.config import CompareConfig
    from harness.suites import load_suites

    phases = {"import": time.perf_counter() - started}
    seed = int(CompareConfig.__dataclass_fields__["seed"].default)  # type: ignore[arg-type]  # the default seed
    suites = [
        suite
        for name in a.suite
        for suite in load_suites(name, limit=a.limit, seed=seed, max_gen_tokens=a.max_gen_tokens)
    ]
    texts: dict[str, str] = {}
    for model in (a.teacher, a.student):
        t0 = time.perf_counter()
        llm = LLM(model=str(model), **_engine_defaults({}))
        phases[f"{model.name}_load"] = time.perf_counter() - t0
        tok = llm.get_tokenizer()

        render = functools.partial(render_chat, tok)
        t0 = time.perf_counter()
        requests = [r for s in suites for item in s.item_requests(render=render) for r in item.requests]
        requests = [r for r in dict.fromkeys(requests) if r.kind == "generate"]
        phases[f"{model.name}_build_requests"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        prompts = [
            TokensPrompt(prompt_token_ids=tok.encode(r.prompt, add_special_tokens=False)) for r in requests
        ]
        params = [
            SamplingParams(
                max_tokens=p.max_tokens,
                temperature=p.temperature,
                top_p=p.top_p,
                stop=list(p.stop) or None,
                seed=p.seed,
            )
            for p in (r.params for r in requests)
            if p is not None
        ]
        outs = llm.generate(prompts, params, use_tqdm=False)
        phases[f"{model.name}_generate"] = time.perf_counter() - t0
        texts.update(
            {f"{model.name}|{r.prompt}": o.outputs[0].text for r, o in zip(requests, outs, strict=True)}
        )
        llm.llm_engine.engine_core.shutdown()
        del llm
    a.out.write_text(json.dumps({"phases": phases, "outputs": texts}), encoding="utf-8")


def startup(reps: int = 5) -> dict[str, float]:
    def median_of(cmd: list[str]) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=child_env(), cwd=REPO, capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    return {
        "harness --help": median_of([sys.executable, "-m", "harness", "--help"]),
        "import harness.cli": median_of([sys.executable, "-c", "import harness.cli"]),
    }


def agreement(raw: dict[str, str], harness: dict[str, str]) -> tuple[int, int]:
    """Prompts both answered, and how many outputs are equal (the harness strips stop strings, as vLLM)."""
    shared = [k for k in raw if k in harness]
    return len(shared), sum(raw[k] == harness[k] for k in shared)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    med = {s: statistics.median(r["seconds"] for r in rs) for s, rs in runs.items()}
    phases = {
        s: {n: statistics.median(r["phases"][n] for r in rs if n in r["phases"]) for n in rs[0]["phases"]}
        for s, rs in runs.items()
    }
    out: dict[str, Any] = {"median_seconds": med, "median_phases": phases, "ratios": {}}
    if "raw" in med and "harness" in med:
        raw_engine = sum(v for k, v in phases["raw"].items() if k.endswith(("_load", "_generate")))
        out["ratios"]["harness/raw"] = med["harness"] / med["raw"]
        out["overhead_vs_raw_engine_pct"] = 100 * (med["harness"] - med["raw"]) / raw_engine
    if "rerun" in med and "harness" in med:
        out["ratios"]["rerun/harness"] = med["rerun"] / med["harness"]
    if "nightly" in med and "kd" in med:
        out["ratios"]["nightly/kd"] = med["nightly"] / med["kd"]
    if "kd-nocache" in med and "kd" in med:
        out["ratios"]["kd/kd-nocache"] = med["kd"] / med["kd-nocache"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "_raw":
        raw_worker(argv[1:])
        return 0
    args = parser().parse_args(argv)
    args.suite = args.suite or ["cot-basic", "if-basic"]
    setups = [s for s in args.setups.split(",") if s]
    if bad := [s for s in setups if s not in SETUPS]:
        raise SystemExit(f"unknown setup {bad[0]!r}: choose from {', '.join(SETUPS)}")
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in setups}
    try:
        for rep in range(args.reps):
            for setup in setups:
                runs[setup].append(run_setup(setup, args, work, rep))
                print(f"rep {rep + 1}/{args.reps} {setup:<8} {runs[setup][-1]['seconds']:7.1f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(runs)
    summary["startup"] = startup()
    if "raw" in runs and "harness" in runs:
        summary["raw_vs_harness_outputs"] = dict(
            zip(
                ("shared", "equal"),
                agreement(runs["raw"][0]["outputs"], runs["harness"][0]["outputs"]),
                strict=True,
            )
        )
    print_table(runs, summary)
    if args.json:
        for rs in runs.values():
            for r in rs:
                r.pop("outputs", None)
        report = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "summary": summary}
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


def print_table(runs: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> None:
    print(f"\n{'setup':<9} {'runs (s)':<30} {'median (s)':>10}")
    for setup, rs in runs.items():
        times = ", ".join(f"{r['seconds']:.1f}" for r in rs)
        print(f"{setup:<9} {times:<30} {summary['median_seconds'][setup]:>10.1f}")
    for name, ratio in summary["ratios"].items():
        print(f"ratio {name:<16} {ratio:6.3f}")
    if "overhead_vs_raw_engine_pct" in summary:
        print(
            "harness - raw, in % of raw's engine time (load + generate): "
            f"{summary['overhead_vs_raw_engine_pct']:.1f}%"
        )
    for name, seconds in summary["startup"].items():
        print(f"start-up {name:<20} {seconds:.3f} s")
    for setup, phases in summary["median_phases"].items():
        print(f"  {setup:<8} " + ", ".join(f"{k}={v:.1f}" for k, v in phases.items()))
    if "raw_vs_harness_outputs" in summary:
        print(f"raw vs harness outputs, first repetition: {summary['raw_vs_harness_outputs']}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", type=Path, default=REPO / "models/demo/teacher")
    p.add_argument("--student", type=Path, default=REPO / "models/demo/student")
    p.add_argument(
        "--student2", type=Path, default=REPO / "models/demo/base", help="the nightly run's student"
    )
    p.add_argument(
        "--suite", action="append", default=None, help="generation suites (default cot-basic, if-basic)"
    )
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--max-gen-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument(
        "--kd-max-sequences", type=int, default=48, help="KD sequences in the kd and nightly setups"
    )
    p.add_argument(
        "--kd-mode",
        default="auto",
        choices=["auto", "exact", "lower-bound"],
        help="the KD setups' --kd-mode (lower-bound: the teacher's top-k is cached, so a nightly run "
        "with an unchanged teacher never starts it)",
    )
    p.add_argument("--setups", default=",".join(SETUPS))
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    return p


if __name__ == "__main__":
    sys.exit(main())
