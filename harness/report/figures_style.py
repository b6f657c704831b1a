"""The one style of every figure (harness.report.figures): fonts, sizes, grid, and one colour, marker and
line style per model, by role: the teacher blue, a base model orange, students purple, green, pink,
teal, grey.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas (never pyplot), so nothing
global changes and no display is needed. Output is deterministic: a fixed `svg.hashsalt`, no dates in
the SVG or PDF metadata, and the bundled DejaVu Sans font, so two renders of the same record are
byte-identical. Record strings are drawn as plain text (`text.parse_math` off: a "$" in a model label
is not math).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.report.view import num

STYLE: dict[Any, Any] = {  # dict[Any, ...]: matplotlib types rc keys as a Literal of names
    "font.family": "DejaVu Sans",  # bundled with matplotlib: the same glyphs on every machine
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#57606a",
    "axes.linewidth": 0.6,
    "axes.titleweight": "bold",
    "grid.color": "#d0d7de",
    "grid.linewidth": 0.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "legend.frameon": False,
    "svg.hashsalt": "distill-harness",
    "svg.fonttype": "none",  # text stays text: small files, selectable, escaped by the SVG writer
    "pdf.fonttype": 42,  # TrueType in the PDF (publishers reject Type 3 fonts)
    "text.parse_math": False,
    "text.usetex": False,
}
SVG_METADATA: dict[str, str | None] = {"Date": None, "Creator": "distill-harness (matplotlib)"}
PDF_METADATA: dict[str, str | None] = {"CreationDate": None, "ModDate": None, "Creator": "distill-harness"}
SINGLE, DOUBLE = 3.4, 7.0  # inches: one and two columns of a two-column paper
SCREEN_SINGLE, SCREEN_DOUBLE = 4.5, 8.0  # inches for the HTML report (same fonts, more room)
SCREEN_SCALE = 1.3  # the HTML shows a figure at most this times its natural size (8 pt -> 14 px)
MIN_WIDTH_PX = (340, 640)  # narrower screens scroll a figure sideways rather than shrink its text
TEACHER, BASE, OTHER = "#0969da", "#bc4c00", "#6e7781"
STUDENTS = ("#8250df", "#1a7f37", "#bf3989", "#0a7e8c", "#6e7781", "#953800")
STUDENT_MARKERS = ("^", "D", "v", "P", "X", "<")
CHANCE_COLOUR = "#8c959f"
LABEL_CHARS = 28  # longer model / subtask labels are shortened in figures (tables keep them whole)


@dataclass(frozen=True)
class ModelStyle:
    label: str
    role: str
    colour: str
    marker: str
    linestyle: str | tuple[int, tuple[int, int]]


@contextmanager
def style() -> Iterator[None]:
    with rc_context(STYLE):
        yield


def model_styles(models: list[dict[str, str]]) -> dict[str, ModelStyle]:
    """One style per model label, by role; students take the next colour and marker in turn."""
    out: dict[str, ModelStyle] = {}
    n_students = 0
    for m in models:
        if m["role"] == "teacher":
            out[m["label"]] = ModelStyle(m["label"], "teacher", TEACHER, "o", "-")
        elif m["role"] == "base":
            out[m["label"]] = ModelStyle(m["label"], "base", BASE, "s", (0, (1, 1)))
        else:
            i = n_students % len(STUDENTS)
            colour = STUDENTS[i] if m["role"] == "student" else OTHER
            out[m["label"]] = ModelStyle(m["label"], m["role"], colour, STUDENT_MARKERS[i], (0, (4, 1)))
            n_students += 1
    return out


def short(text: str, limit: int = LABEL_CHARS) -> str:
    """Control characters as spaces, and at most `limit` characters (an ellipsis marks a cut)."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def legend_label(s: ModelStyle, *notes: str) -> str:
    """ "student-topk (student, lower bound)"; the role is left out where it is the label itself."""
    extra = [s.role] if s.role not in ("model", s.label) else []
    extra += [n for n in notes if n]
    return short(s.label) + (f" ({', '.join(extra)})" if extra else "")


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def decade_label(x: float, _pos: Any = None) -> str:
    """Log-axis ticks as 10⁻⁶ … 10² in plain text (math text is off, so matplotlib's default would
    print its TeX markup)."""
    if x <= 0 or not math.isfinite(x):
        return ""
    exponent = round(math.log10(x))
    if abs(math.log10(x) - exponent) > 1e-6:
        return ""
    return "1" if exponent == 0 else "10" if exponent == 1 else "10" + str(exponent).translate(SUPERSCRIPT)


def tint(colour: str, amount: float) -> str:
    """`colour` mixed with white (amount 1 = white): the lighter bar of a baseline variant."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in rgb)


def pct(value: Any) -> float:
    """A recorded fraction as a percentage; NaN when missing."""
    x = num(value)
    return math.nan if x is None else 100.0 * x


def upper_limit(values: list[float]) -> float:
    """The y axis top for scores in %: room above the highest value or CI end, at most 100."""
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite, default=100.0)
    return min(100.0, max(10.0, math.ceil((top + 5.0) / 10.0) * 10.0))


def chance_line(ax: Axes, chance: Any, horizontal: bool = True) -> Line2D | None:
    """The chance level as a dashed line across the axes; None when the record has no chance level."""
    c = num(chance)
    if c is None or c <= 0:
        return None
    draw = ax.axhline if horizontal else ax.axvline
    return draw(100 * c, color=CHANCE_COLOUR, linestyle=(0, (3, 2)), linewidth=0.8, zorder=1)


def new_figure(width: float, height: float) -> Figure:
    """An empty figure (constrained layout) on its own Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def add_legend(fig: Figure, handles: list[Any], labels: list[str], ncols: int) -> None:
    """The figure's legend, below the axes, in at most `ncols` columns."""
    # explicit handles and labels: a label starting with "_" would otherwise be hidden
    fig.legend(handles, labels, loc="outside lower center", ncols=max(1, min(ncols, len(handles))))
