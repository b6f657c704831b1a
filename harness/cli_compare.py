"""The `compare` subcommand's options and the CompareConfig they build (harness.cli). Imports stay lazy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.cli_nightly import _add_gate_options
from harness.errors import HarnessError


def _engine_args(pairs: list[str]) -> dict[str, Any]:
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HarnessError(
                f"--engine-arg {pair!r}: write KEY=VALUE, e.g. --engine-arg max_model_len=2048"
            )
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _temperatures(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise HarnessError(f"--kd-temperature {text!r}: give numbers separated by commas, e.g. 1,2") from None


def _shots(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise HarnessError(
            f"--shots {text!r}: give whole numbers separated by commas, e.g. 0,1,2,4,8"
        ) from None


def _suites(values: list[str] | None) -> tuple[str, ...]:
    from harness.config import DEFAULT_SUITES

    if not values:
        return DEFAULT_SUITES
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


def _config_defaults() -> dict[str, Any]:
    """CompareConfig's own defaults, so the CLI cannot drift from the API."""
    from dataclasses import MISSING, fields

    from harness.config import CompareConfig

    return {f.name: f.default for f in fields(CompareConfig) if f.default is not MISSING}


def _add_compare_parser(sub: Any, d: dict[str, Any]) -> None:
    cmp_ = sub.add_parser("compare", help="compare a teacher with one or more students")
    cmp_.add_argument("teacher", help="[backend:]path-or-id of the teacher (vllm, hf, openai:URL#NAME)")
    cmp_.add_argument("students", nargs="+", help="[backend:]path-or-id of each student")
    cmp_.add_argument("--base", help="an undistilled base student, reported like a student")
    cmp_.add_argument(
        "--suite", action="append", help="suite name or suite file (repeatable; default: built-ins)"
    )
    cmp_.add_argument("--limit", type=int, help="at most N items per suite")
    cmp_.add_argument("--out", type=Path, default=d["out_dir"], help="run folder to write")
    cmp_.add_argument("--backend", help="default backend for models without a prefix (vllm or hf)")
    cmp_.add_argument(
        "--cache-dir", type=Path, help="response cache folder (default ~/.cache/distill-harness)"
    )
    cmp_.add_argument("--data-dir", type=Path, help="folder with local copies of public datasets")
    cmp_.add_argument("--seed", type=int, default=d["seed"])
    cmp_.add_argument("--bootstrap", type=int, default=d["bootstrap"], help="bootstrap iterations for CIs")
    cmp_.add_argument(
        "--chat-template",
        choices=["on", "off", "auto"],
        default="auto",
        help="render every suite's prompts with each model's chat template (few-shot as multi-turn); "
        "auto: each suite's default, which follows lm-eval's (off) for lm-eval tasks",
    )
    cmp_.add_argument("--shots", help="ICL shot sweep for every icl suite, e.g. 0,1,2,4,8")
    cmp_.add_argument("--icl-draws", type=int, help="seeded example draws per shot count > 0 (e.g. 3)")
    cmp_.add_argument(
        "--max-gen-tokens",
        type=int,
        help="cap every suite generation budget (default: each task's own, e.g. 256 for GSM8K CoT); "
        "truncations are counted in the report",
    )
    _add_kd_options(cmp_, d)
    _add_run_options(cmp_, d)


def _add_kd_options(cmp_: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    cmp_.add_argument("--no-kd", action="store_true", help="skip the token-level KD check")
    cmp_.add_argument(
        "--kd-temperature",
        default=",".join(f"{t:g}" for t in d["kd_temperatures"]),
        help="temperatures for KD divergences, e.g. 1,2",
    )
    cmp_.add_argument(
        "--kd-max-tokens", type=int, default=d["kd_max_tokens"], help="length of each teacher generation"
    )
    cmp_.add_argument(
        "--kd-max-sequences",
        type=int,
        default=d["kd_max_sequences"],
        help="teacher generations scored (all suites)",
    )
    cmp_.add_argument(
        "--kd-top-k", type=int, default=d["kd_top_k"], help="teacher top-k kept in lower-bound mode"
    )
    cmp_.add_argument("--kd-mode", choices=["auto", "exact", "lower-bound"], default=d["kd_mode"])
    cmp_.add_argument(
        "--kd-cka-positions",
        type=int,
        default=d["kd_cka_positions"],
        help="positions of the teacher's KD text sampled for linear CKA of hidden states (0: off)",
    )


def _add_run_options(cmp_: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    """Engines, chunks, the report, the store and the gate."""
    cmp_.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to every engine (dtype, max_model_len, tensor_parallel_size, ...)",
    )
    cmp_.add_argument(
        "--chunk-size",
        type=int,
        default=d["chunk_size"],
        help="requests per engine call, each committed to the cache as it returns",
    )
    cmp_.add_argument("--no-report", action="store_true", help="write the run record only")
    cmp_.add_argument(
        "--format", default="html", help="report formats: html, latex, md, figures (comma-separated) or all"
    )
    cmp_.add_argument(
        "--store", type=Path, help="also commit the run into this run store (see `harness runs`)"
    )
    _add_gate_options(
        cmp_, "run the regression gate against this run (folder, run id or tag) after the compare"
    )


def _compare_config(args: argparse.Namespace) -> Any:
    from harness.backends import parse_model_spec
    from harness.config import CompareConfig, default_cache_dir

    default = args.backend
    if default is not None and default not in ("vllm", "hf", "mock"):
        raise HarnessError(f"--backend {default!r}: use vllm or hf")
    return CompareConfig(
        teacher=parse_model_spec(args.teacher, default),
        students=tuple(parse_model_spec(s, default) for s in args.students),
        base=parse_model_spec(args.base, default) if args.base else None,
        suites=_suites(args.suite),
        limit=args.limit,
        out_dir=args.out,
        cache_dir=args.cache_dir or default_cache_dir(),
        data_dir=args.data_dir,
        seed=args.seed,
        bootstrap=args.bootstrap,
        chat_template={"on": True, "off": False, "auto": None}[args.chat_template],
        shots=_shots(args.shots),
        icl_draws=args.icl_draws,
        max_gen_tokens=args.max_gen_tokens,
        kd=not args.no_kd,
        kd_temperatures=_temperatures(args.kd_temperature),
        kd_max_tokens=args.kd_max_tokens,
        kd_max_sequences=args.kd_max_sequences,
        kd_top_k=args.kd_top_k,
        kd_mode=args.kd_mode,
        kd_cka_positions=args.kd_cka_positions,
        chunk_size=args.chunk_size,
        engine_args=_engine_args(args.engine_arg),
    )
