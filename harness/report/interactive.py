"""The report's one script (sortable tables, the item explorer) and the Content-Security-Policy allowing it.

The script is a fixed file (templates/_interactive.js.j2, read verbatim, never rendered), placed inline
in the page; the CSP allows exactly it by its sha256, computed here when the page is rendered, and
nothing else: no 'unsafe-inline', no other source, no network. Inline event handlers and injected
<script> elements are therefore refused by the browser even if text ever escaped the template's
escaping. The page reads fine with scripts off (the explorer then shows its first page).
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from pathlib import Path

from markupsafe import Markup

SCRIPT_PATH = Path(__file__).parent / "templates" / "_interactive.js.j2"
POLICY = (
    "default-src 'none'; script-src {script}; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)


@lru_cache(maxsize=1)
def script_text() -> str:
    text = SCRIPT_PATH.read_text(encoding="utf-8")
    # inside <script> only "</script" or "<!--" could change how the HTML parser reads the text
    if "</" in text or "<!--" in text:
        raise ValueError(f"{SCRIPT_PATH} must not contain '</' or '<!--'")
    return text


def script_hash(text: str) -> str:
    """The CSP source expression for an inline script: 'sha256-<base64 of the UTF-8 text's digest>'."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def csp(with_script: bool = True) -> str:
    """The page's policy; without the script, scripts are refused altogether."""
    return POLICY.format(script=script_hash(script_text()) if with_script else "'none'")


def script_markup() -> Markup:
    """The script text, unescaped (it is ours and holds no '</'), for `<script>{{ script }}</script>`."""
    return Markup(script_text())  # a fixed file of this package, checked above
