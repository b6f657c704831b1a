"""Write a run's reports in the formats asked for: `harness report RUN_DIR --format html,latex,md,figures`.

html: RUN_DIR/index.html (or `html_out`); latex: RUN_DIR/tables.tex; md: RUN_DIR/summary.md;
figures: RUN_DIR/figures/<name>.svg and .pdf. matplotlib is imported only for html and figures.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError
from harness.store.record import RunRecord, read_record

FORMATS = ("html", "latex", "md", "figures")
DEFAULT_FORMATS = frozenset({"html"})
FILE_NAMES = {"html": "index.html", "latex": "tables.tex", "md": "summary.md", "figures": "figures"}


def parse_formats(text: str) -> set[str]:
    """ "html,latex" -> {"html", "latex"}; "all" -> every format; an unknown name is an error."""
    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    if names == {"all"}:
        return set(FORMATS)
    unknown = sorted(names - set(FORMATS))
    if unknown or not names:
        raise HarnessError(
            f"--format {text!r}: unknown format {', '.join(unknown) or '(none given)'}; "
            f"use a comma-separated list of {', '.join(FORMATS)} (or all)"
        )
    return names


def _write_text(path: Path, text: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"cannot write {path}: {exc.strerror}; pick another folder") from exc
    return path


def write_outputs(
    run_dir: Path,
    formats: set[str] | frozenset[str] = DEFAULT_FORMATS,
    *,
    html_out: Path | None = None,
    record: RunRecord | None = None,
) -> dict[str, Path]:
    """Write each asked-for format from the run record in `run_dir`; returns {format: path written}
    (for figures, the folder). `record` may be passed when already read."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise HarnessError(
            f"formats {sorted(formats)}: use one or more of {', '.join(FORMATS)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    run_dir = Path(run_dir)
    record = record if record is not None else read_record(run_dir)
    written: dict[str, Path] = {}
    if "html" in formats:
        from harness.report.html import render_html

        written["html"] = render_html(record, html_out or run_dir / FILE_NAMES["html"])
    if "latex" in formats:
        from harness.report.latex import render_latex

        written["latex"] = _write_text(run_dir / FILE_NAMES["latex"], render_latex(record))
    if "md" in formats:
        from harness.report.markdown import render_markdown

        written["md"] = _write_text(run_dir / FILE_NAMES["md"], render_markdown(record))
    if "figures" in formats:
        from harness.report.figures import write_figures

        folder = run_dir / FILE_NAMES["figures"]
        write_figures(record, folder)
        written["figures"] = folder
    return written
