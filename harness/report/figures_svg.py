"""Figure SVG as markup for the HTML report: a whitelist of SVG elements and attributes (no scripts,
styles, links or clip paths), ids renamed per figure so that several figures share one page.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from harness.errors import HarnessError
from harness.report.figures_style import MIN_WIDTH_PX, SCREEN_SCALE

SVG_NS, XLINK_NS = "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"
ALLOWED_ELEMENTS = frozenset(
    {"svg", "g", "defs", "path", "use", "text", "tspan", "rect", "line", "polyline", "polygon", "circle"}
    | {"ellipse", "title", "desc"}
)
ALLOWED_ATTRIBUTES = frozenset(
    {"id", "d", "style", "transform", "x", "y", "dx", "dy", "width", "height", "viewBox", "href"}
    | {"x1", "y1", "x2", "y2", "points", "cx", "cy", "r", "rx", "ry", "fill", "stroke", "stroke-width"}
    | {"opacity", "text-anchor", "font-size", "font-weight", "dominant-baseline", "version"}
)
UNSAFE_VALUE = re.compile(r"url\s*\(|expression\s*\(|javascript:|@import|\\|<|>", re.I)
FONT_FALLBACK = "'DejaVu Sans', Verdana, 'Segoe UI', Arial, sans-serif"


def _local_name(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def inline_svg(
    svg: bytes, prefix: str, *, label: str, scale: float = SCREEN_SCALE, min_width_px: int = MIN_WIDTH_PX[0]
) -> str:
    """SVG markup safe to place in the report's HTML: only whitelisted elements and attributes survive
    (no script, style, foreignObject, links, event handlers or clip paths); `href` may only point at an
    id of the same figure; ids are prefixed with `prefix` (unique per page). The root scales with its
    container between `min_width_px` and `scale` times its natural size."""
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as exc:
        raise HarnessError(f"figure SVG is not well-formed XML ({exc}): cannot embed it") from exc
    if _local_name(root.tag) != "svg":
        raise HarnessError("figure SVG has no <svg> root: cannot embed it")
    referenced = {
        value[1:]
        for el in root.iter()
        for key, value in el.attrib.items()
        if _local_name(key) == "href" and value.startswith("#")
    }
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", prefix)
    parts: list[str] = []
    sizes = (scale, min_width_px)
    _serialize(root, parts, prefix, referenced, is_root=True, label=label, sizes=sizes)
    return "".join(parts)


def _clean_attributes(el: ET.Element, prefix: str, referenced: set[str]) -> list[tuple[str, str]]:
    out = []
    for key, value in el.attrib.items():
        name = _local_name(key)
        if name not in ALLOWED_ATTRIBUTES or name.lower().startswith("on"):
            continue
        if name == "href":
            if not re.fullmatch(r"#[A-Za-z0-9_.-]+", value) or value[1:] not in referenced:
                continue
            value = f"#{prefix}{value[1:]}"
        elif name == "id":
            if value not in referenced:
                continue  # matplotlib names every group; unreferenced ids would only collide on the page
            value = prefix + value
        elif UNSAFE_VALUE.search(value):
            continue
        if name == "style":
            value = value.replace("font-family: 'DejaVu Sans'", f"font-family: {FONT_FALLBACK}")
        out.append((name, value))
    return out


def _serialize(
    el: ET.Element,
    parts: list[str],
    prefix: str,
    referenced: set[str],
    *,
    is_root: bool = False,
    label: str = "",
    sizes: tuple[float, int] = (1.0, 0),
) -> None:
    name = _local_name(el.tag)
    if name not in ALLOWED_ELEMENTS or (name == "svg" and not is_root):
        return  # dropped with its subtree (matplotlib writes no text between elements)
    attrs = _clean_attributes(el, prefix, referenced)
    if is_root:
        attrs = [(k, v) for k, v in attrs if k in ("viewBox", "version")]
        view_box = dict(attrs).get("viewBox", "0 0 0 0").split()
        width_px = float(view_box[2]) * 4 / 3 * sizes[0] if len(view_box) == 4 else 600.0
        attrs += [
            ("xmlns", SVG_NS),
            ("class", "figure"),
            ("role", "img"),
            ("aria-label", label),
            (
                "style",
                f"width: 100%; max-width: {width_px:.0f}px; min-width: {min(sizes[1], width_px):.0f}px; "
                "height: auto; display: block",
            ),
        ]
    parts.append(f"<{name}" + "".join(f" {k}={quoteattr(v)}" for k, v in attrs) + ">")
    if is_root and label:
        parts.append(f"<title>{escape(label)}</title>")
    if el.text and name in ("text", "tspan", "title", "desc"):
        parts.append(escape(el.text))
    for child in el:
        _serialize(child, parts, prefix, referenced)
    parts.append(f"</{name}>")
