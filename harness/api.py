"""The public functions behind the CLI: compare, report, and the demo."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from harness.config import CompareConfig
from harness.errors import HarnessError


def load_suites(config: CompareConfig) -> list[Any]:
    """Load and validate every suite before any model loads (bad suites fail fast)."""
    from harness.suites import load_suites as load

    suites = [
        suite
        for name in config.suites
        for suite in load(
            name,
            limit=config.limit,
            data_dir=config.data_dir,
            chat_template=config.chat_template,
            seed=config.seed,
            shots=config.shots,
            draws=config.icl_draws,
            max_gen_tokens=config.max_gen_tokens,
        )
    ]
    names = [s.info().name for s in suites]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise HarnessError(f"suite {repeated[0]} is selected twice: name each suite once in --suite")
    return suites


def _line_progress() -> Any:
    """Progress for logs (no terminal): one line when a phase starts and one when it ends, with its time."""
    import sys
    import time

    started: dict[str, float] = {}
    finished: set[str] = set()

    def update(phase: str, done: int, total: int) -> None:
        if phase in finished:
            return
        if phase not in started:
            started[phase] = time.perf_counter()
            print(f"[harness] {phase}: {total} to do", file=sys.stderr, flush=True)
        if done >= total:
            finished.add(phase)
            seconds = time.perf_counter() - started[phase]
            print(f"[harness] {phase}: done in {seconds:.1f} s", file=sys.stderr, flush=True)

    return update


def _progress(console: bool) -> tuple[AbstractContextManager[Any], Any]:
    import sys

    if not console:
        return nullcontext(), None
    if not sys.stderr.isatty():
        return nullcontext(), _line_progress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total)
        bars.update(tasks[phase], completed=done, total=total)

    return bars, update


def compare(
    config: CompareConfig, *, report: bool = True, console: bool = False, formats: str = "html"
) -> Path:
    """Run a comparison; returns the run folder (with the report formats unless report=False)."""
    from harness.compare import run_compare
    from harness.report.outputs import parse_formats

    config.validate()
    wanted = parse_formats(formats)  # a bad --format fails before any model loads
    suites = load_suites(config)
    bars, update = _progress(console)
    with bars:
        run_dir = run_compare(config, suites, progress=update)
    if report:
        written = report_formats(run_dir, ",".join(sorted(wanted)))
        if console:
            _print_summary(run_dir)
            for fmt, path in written.items():
                print(f"{'report' if fmt == 'html' else fmt}: {path}")
    return run_dir


def report_formats(run_dir: Path, formats: str = "html", out: Path | None = None) -> dict[str, Path]:
    """Write the report formats (html, latex, md, figures, or all) of a finished run; {format: path}."""
    from harness.report.outputs import parse_formats, write_outputs

    return write_outputs(Path(run_dir), parse_formats(formats), html_out=out)


def report_runs(run_a: Path, run_b: Path, formats: str = "html", out: Path | None = None) -> dict[str, Path]:
    """Two runs side by side (A before, B after): html and/or md; {format: path}."""
    from harness.report.compare_runs import write_comparison
    from harness.report.outputs import parse_formats

    return write_comparison(Path(run_a), Path(run_b), parse_formats(formats), out)


def _render(run_dir: Path, out: Path | None) -> Path:
    from harness.report import render_html
    from harness.store.record import read_record

    record = read_record(run_dir)
    return render_html(record, out or run_dir / "index.html")


def _print_summary(run_dir: Path) -> None:
    from rich.console import Console

    from harness.report import render_terminal_summary
    from harness.store.record import read_record

    render_terminal_summary(read_record(run_dir), Console())


def report(run_dir: Path, out: Path | None = None) -> Path:
    """Render RUN_DIR/index.html (or `out`) from a finished run record."""
    return _render(Path(run_dir), out)


def demo_prepare(out_dir: Path, *, force: bool = False) -> Any:
    from harness.demo.prepare import prepare_demo

    return prepare_demo(out_dir, force=force, progress=print)


def demo_run(
    models_dir: Path, out_dir: Path, *, backend: str | None = None, limit: int | None = None
) -> Path:
    """Prepare (cached) the demo teacher, base and student, then compare them on the built-in suites."""
    from harness.backends import parse_model_spec

    models = demo_prepare(models_dir)
    if backend not in (None, "vllm", "hf"):
        raise HarnessError(f"--backend {backend!r}: use vllm or hf")
    config = CompareConfig(
        teacher=parse_model_spec(str(models.teacher), backend, label="teacher"),
        students=(parse_model_spec(str(models.student), backend, label="student"),),
        base=parse_model_spec(str(models.base), backend, label="base"),
        out_dir=out_dir,
        limit=limit,
    )
    return compare(config, report=True, console=True)
