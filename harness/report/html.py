"""The self-contained HTML report: one file, inline CSS, SVG and one inline script, no network.

Model outputs are untrusted text. The Jinja environment autoescapes everything; the only markup
marked safe is the figures' SVG, which harness.report.figures.inline_svg rebuilds from a whitelist
of elements and attributes (no scripts, styles, links or foreign content), the explorer's JSON
(harness.report.explorer.json_for_script) and the page's own script (harness.report.interactive).
A Content-Security-Policy in the page allows that one script by its hash and forbids every other
script and every network fetch, as a second line of defence.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from harness.errors import HarnessError
from harness.report.build import build_view
from harness.report.interactive import csp, script_markup
from harness.store.record import RunRecord

TEMPLATE_DIR = Path(__file__).parent / "templates"
DEFAULT_CAP = 2000  # items per suite and variant in the explorer (the file grows about 1.6 kB per item)


def environment() -> jinja2.Environment:
    """Autoescape on for every template (they end in .j2, so select_autoescape would not fire)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_page(template: str, **context: object) -> str:
    """Render a page template with the CSP (hash of the page script, computed now) and the script."""
    return environment().get_template(template).render(csp=csp(), script=script_markup(), **context)


def render_html_text(record: RunRecord, *, max_items_per_variant: int = DEFAULT_CAP) -> str:
    view = build_view(record, max_items_per_variant=max_items_per_variant)
    return render_page("report.html.j2", v=view)


def render_html(record: RunRecord, out_path: Path, *, max_items_per_variant: int = DEFAULT_CAP) -> Path:
    """Write the report for `record` to `out_path` (parents created) and return the path."""
    out_path = Path(out_path)
    if max_items_per_variant < 1:
        raise HarnessError(f"max_items_per_variant={max_items_per_variant}: give at least 1")
    text = render_html_text(record, max_items_per_variant=max_items_per_variant)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise HarnessError(
            f"cannot write the report to {out_path}: {exc.strerror}; pick another --out"
        ) from exc
    return out_path
