"""The `harness` command. Imports stay lazy so `harness --help` answers at once.

User errors print one line and exit 2; infrastructure failures exit 3; `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from harness.cli_compare import _add_compare_parser, _compare_config, _config_defaults, _engine_args
from harness.cli_nightly import (
    _add_nightly_parsers,
    _cmd_cache,
    _cmd_history,
    _cmd_regress,
    _cmd_run,
    _cmd_runs,
)
from harness.errors import HarnessError


def build_parser() -> argparse.ArgumentParser:
    d = _config_defaults()
    parser = argparse.ArgumentParser(
        prog="harness",
        description="What did the student keep? Compare a teacher LLM with its distilled students.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_compare_parser(sub, d)
    _add_score_parser(sub)
    _add_report_parsers(sub)
    _add_demo_parser(sub)
    _add_nightly_parsers(sub)
    from harness.serve import add_serve_parser

    add_serve_parser(sub)
    return parser


def _add_score_parser(sub: Any) -> None:
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


def _add_report_parsers(sub: Any) -> None:
    """report, suites, validate."""
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


def _add_demo_parser(sub: Any) -> None:
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
