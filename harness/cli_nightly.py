"""The nightly regression workflow's subcommands of `harness`: regress, runs, run, cache, history, and the
gate options that `compare` shares. Imports stay lazy, as in harness.cli."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


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
    cache.add_argument("--older-than", type=float, metavar="DAYS", help="prune: entries unused this long")
    cache.add_argument(
        "--model", metavar="FINGERPRINT", help="prune/list: only this model (fingerprint prefix)"
    )
    cache.add_argument(
        "--max-size", type=float, metavar="GB", help="prune: least recently used first until the cache fits"
    )
    cache.add_argument("--store", type=Path, help="name fingerprints after the models of this run store")
    hist = sub.add_parser("history", help="a trend page of the store's runs (abilities, KD, gate verdicts)")
    hist.add_argument("--store", type=Path, help=store_help)
    hist.add_argument("--out", type=Path, help="HTML file (default STORE/history.html)")
    hist.add_argument("--model", help="only runs with this model")


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
    from harness.store.index import RunStore, default_store
    from harness.store.views import format_run, format_runs

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
