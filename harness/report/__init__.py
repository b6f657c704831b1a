"""Reports written from a run record: the self-contained HTML file and the terminal summary."""

from __future__ import annotations

from harness.report.html import render_html
from harness.report.terminal import render_terminal_summary

__all__ = ["render_html", "render_terminal_summary"]
