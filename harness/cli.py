"""The `harness` command. Imports stay lazy so `harness --help` answers at once.

User errors print one line and exit 2; infrastructure failures exit 3; `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

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


def build_parser() -> argparse.ArgumentParser:
    d = _config_defaults()
    parser = argparse.ArgumentParser(
        prog="harness",
        description="What did the student keep? Compare a teacher LLM with its distilled students.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

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

    sc = sub.add_parser(
        "score",
        help="re-score saved responses without a model (run records, IFEval, BBH, lm-eval log_samples)",
    )
    sc.add_argument("suite", help="suite(s) as for compare, comma-separated: ifeval, bbh, bbh:navigate, ...")
    sc.add_argument(
        "--responses",
        type=Path,
        required=True,
        help="a run folder or items.jsonl, IFEval input_response_data JSONL, BBH {input, prediction, "
        "target} records, or lm-eval --log_samples file(s)",
    )
    sc.add_argument("--data-dir", type=Path, help="folder with local copies of public datasets")
    sc.add_argument("--out", type=Path, help="folder for metrics.json and the re-scored items.jsonl")
    sc.add_argument("--limit", type=int, help="only the first N items of each suite")
    sc.add_argument("--subtask", help="BBH subtask of records that do not name one")
    sc.add_argument("--mode", choices=["cot", "direct"], help="BBH variant of records that do not name one")
    sc.add_argument("--model", help="label for outside records (default: the file name)")
    sc.add_argument("--seed", type=int)
    sc.add_argument("--bootstrap", type=int, help="bootstrap iterations for CIs")

    rep = sub.add_parser(
        "report", help="render the HTML report of a run folder, or compare two (RUN_A before, RUN_B after)"
    )
    rep.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="one run folder, or two")
    rep.add_argument(
        "--out", type=Path, help="HTML file (default RUN_DIR/index.html; two runs: RUN_B/vs-<RUN_A>.html)"
    )
    rep.add_argument(
        "--format",
        default="html",
        help="comma-separated: html, latex (tables.tex), md (summary.md), figures (SVG+PDF), or all",
    )

    suites_ = sub.add_parser("suites", help="list the built-in suites")
    suites_.add_argument("--data-dir", type=Path, help="folder with local copies of public datasets")
    val = sub.add_parser("validate", help="check a suite file without running a model")
    val.add_argument("suite_file")

    demo = sub.add_parser("demo", help="the demo models (teacher, base, distilled student)")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)
    prep = demo_sub.add_parser("prepare", help="build the demo models (cached)")
    prep.add_argument("--out", type=Path, default=Path("models/demo"))
    prep.add_argument("--force", action="store_true")
    drun = demo_sub.add_parser("run", help="prepare the demo models and compare them on the built-in suites")
    drun.add_argument("--models", type=Path, default=Path("models/demo"))
    drun.add_argument("--out", type=Path, default=Path("reports/demo"))
    drun.add_argument("--backend", default=None)
    drun.add_argument("--limit", type=int)
    _add_nightly_parsers(sub)
    from harness.serve import add_serve_parser

    add_serve_parser(sub)
    return parser


def _add_gate_options(parser: argparse.ArgumentParser, baseline_help: str) -> None:
    parser.add_argument("--baseline", metavar="RUN|TAG", help=baseline_help)
    parser.add_argument(
        "--margin",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="drop tolerated before a metric counts as regressed (score, a metric, SUITE or SUITE/METRIC; "
        "a number or N%%; defaults: score=0.02, inst_level_strict=0.02, forward_kl=10%%, top1_agree=0.02)",
    )
    parser.add_argument(
        "--alpha", type=float, default=0.05, help="family-wise error level of the gate (Holm)"
    )
    parser.add_argument(
        "--test",
        choices=["non-inferiority", "regression"],
        default="non-inferiority",
        help="non-inferiority (default): a metric passes only when its drop is shown to be below the margin "
        "(H0: drop >= margin); regression: it fails only when its drop is shown to exceed the margin",
    )
    parser.add_argument(
        "--json", type=Path, dest="gate_json", help="also write the gate's verdict (JSON) here"
    )


def _add_nightly_parsers(sub: Any) -> None:
    """regress, runs, run, cache, history: the nightly regression workflow."""
    store_help = "the run store folder (default $HARNESS_STORE or ~/.local/share/distill-harness/store)"
    reg = sub.add_parser("regress", help="gate a run against a baseline run: exit 0 pass, 1 regression")
    _add_gate_options(reg, "the baseline run: a run folder, a run id or a tag of the store")
    reg.add_argument("--current", required=True, metavar="RUN", help="the run to gate (folder, run id, tag)")
    reg.add_argument("--store", type=Path, help=store_help)
    with_store = argparse.ArgumentParser(add_help=False)
    with_store.add_argument("--store", type=Path, help=store_help)
    runs = sub.add_parser("runs", help="list, show, tag and add runs of a run store")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    lst = runs_sub.add_parser("list", help="committed runs, oldest first", parents=[with_store])
    lst.add_argument("--model", help="label, spec or fingerprint prefix")
    lst.add_argument("--suite", help="suite name")
    lst.add_argument("--since", help="ISO date/time or Nd (the last N days)")
    lst.add_argument("--tag", help="tag")
    show = runs_sub.add_parser("show", help="one run", parents=[with_store])
    show.add_argument("run", help="run id, tag, latest or id prefix")
    tag = runs_sub.add_parser(
        "tag", help="point a tag at a run (moves it if it exists)", parents=[with_store]
    )
    tag.add_argument("run")
    tag.add_argument("tag")
    add = runs_sub.add_parser("add", help="commit a finished run folder into the store", parents=[with_store])
    add.add_argument("run_dir", type=Path)
    add.add_argument("--tag", action="append", default=[])
    run = sub.add_parser("run", help="run a compare described in a YAML file into the store, then gate it")
    run.add_argument("file", type=Path)
    run.add_argument("--store", type=Path, help="overrides the file's store")
    cache = sub.add_parser("cache", help="list, size and prune the response cache")
    cache.add_argument("cache_command", choices=["list", "size", "prune"])
    cache.add_argument("--cache-dir", type=Path, help="default ~/.cache/distill-harness")
    cache.add_argument("--older-than", type=float, metavar="DAYS", help="prune: entries older than this")
    cache.add_argument(
        "--model", metavar="FINGERPRINT", help="prune/list: only this model (fingerprint prefix)"
    )
    cache.add_argument(
        "--max-size", type=float, metavar="GB", help="prune: oldest first until the cache fits"
    )
    cache.add_argument("--store", type=Path, help="name fingerprints after the models of this run store")
    hist = sub.add_parser("history", help="a trend page of the store's runs (abilities, KD, gate verdicts)")
    hist.add_argument("--store", type=Path, help=store_help)
    hist.add_argument("--out", type=Path, help="HTML file (default STORE/history.html)")
    hist.add_argument("--model", help="only runs with this model")


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


def _cmd_compare(args: argparse.Namespace) -> int:
    from harness.api import compare

    config = _compare_config(args)
    if args.baseline is None and args.store is None:
        compare(config, report=not args.no_report, console=True, formats=args.format)
        return 0
    from harness.regress import parse_margins
    from harness.runconfig import Plan, compare_and_gate

    plan = Plan(
        store=args.store,
        baseline=args.baseline,
        margins=parse_margins(args.margin),
        alpha=args.alpha,
        test=args.test,
        report=not args.no_report,
        formats=args.format,
        json_out=args.gate_json,
    )
    return compare_and_gate(config, plan)


def _cmd_report(args: argparse.Namespace) -> int:
    from harness.api import report_formats, report_runs

    if len(args.run_dirs) > 2:
        raise HarnessError(f"report: got {len(args.run_dirs)} run folders; give one, or two to compare")
    if len(args.run_dirs) == 2:
        written = report_runs(args.run_dirs[0], args.run_dirs[1], args.format, args.out)
    else:
        written = report_formats(args.run_dirs[0], args.format, args.out)
    for fmt, path in written.items():
        print(f"{'report' if fmt == 'html' else fmt}: {path}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from harness.rescore import format_summary, score_responses

    metrics = score_responses(
        args.suite,
        args.responses,
        data_dir=args.data_dir,
        out_dir=args.out,
        limit=args.limit,
        subtask=args.subtask,
        mode=args.mode,
        model=args.model,
        seed=args.seed,
        bootstrap=args.bootstrap,
    )
    print(format_summary(metrics))
    if args.out is not None:
        print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def _cmd_suites(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.suites import list_suites

    table = Table("suite", "ability", "items", "variants", "chance", "description")
    for info in list_suites(args.data_dir):
        table.add_row(
            info.name,
            info.ability,
            str(info.n_items) if info.n_items is not None else "-",
            ", ".join(info.variants),
            f"{info.chance:g}" if info.chance is not None else "per subtask",
            info.description + (f" [{info.note}]" if info.note else ""),
        )
    Console().print(table)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from harness.suites import validate_suite_file

    info = validate_suite_file(args.suite_file)
    print(f"ok: {info.name} ({info.ability}, {info.n_items} items, variants {', '.join(info.variants)})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from harness.api import demo_prepare, demo_run

    if args.demo_command == "prepare":
        models = demo_prepare(args.out, force=args.force)
        print(f"teacher: {models.teacher}\nbase:    {models.base}\nstudent: {models.student}")
        return 0
    demo_run(args.models, args.out, backend=args.backend, limit=args.limit)
    return 0


def _cmd_regress(args: argparse.Namespace) -> int:
    from harness.regress import parse_margins, run_gate

    if args.baseline is None:
        raise HarnessError("harness regress needs --baseline RUN|TAG (and --current RUN)")
    verdict = run_gate(
        args.baseline,
        args.current,
        store=args.store,
        margins=parse_margins(args.margin),
        alpha=args.alpha,
        json_out=args.gate_json,
        test=args.test,
    )
    return verdict.exit_code


def _cmd_runs(args: argparse.Namespace) -> int:
    from harness.store.index import RunStore, default_store, format_run, format_runs

    with RunStore(args.store or default_store()) as store:
        if args.runs_command == "list":
            print(format_runs(store.runs(model=args.model, suite=args.suite, since=args.since, tag=args.tag)))
        elif args.runs_command == "show":
            print(format_run(store.get(store.resolve_id(args.run))))
        elif args.runs_command == "tag":
            entry = store.tag(args.run, args.tag)
            print(f"{args.tag} -> {entry.run_id}")
        else:
            entry = store.commit(args.run_dir, tags=tuple(args.tag))
            print(f"committed: {entry.run_id} ({entry.path})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.runconfig import run_file

    return run_file(args.file, store=args.store)


def _cmd_cache(args: argparse.Namespace) -> int:
    from harness.store.cache_admin import cache_command

    return cache_command(args)


def _cmd_history(args: argparse.Namespace) -> int:
    from harness.report.history import write_history
    from harness.store.index import default_store

    path = write_history(args.store or default_store(), args.out, model=args.model)
    print(f"history: {path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from harness.serve import cmd_serve

    return cmd_serve(args, _engine_args(args.engine_arg))


COMMANDS = {
    "serve": _cmd_serve,
    "regress": _cmd_regress,
    "runs": _cmd_runs,
    "run": _cmd_run,
    "cache": _cmd_cache,
    "history": _cmd_history,
    "compare": _cmd_compare,
    "report": _cmd_report,
    "score": _cmd_score,
    "suites": _cmd_suites,
    "validate": _cmd_validate,
    "demo": _cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return COMMANDS[args.command](args)
    except HarnessError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the cache", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
