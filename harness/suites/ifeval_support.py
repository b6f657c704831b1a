"""Reproducible scoring with lm-eval's IFEval checkers.

lm-eval's `process_results` rebuilds each instruction's checker from the prompt's kwargs, twice
(strict, then loose). Two things in that path are random:

- `langdetect` (the response_language, english_capital and english_lowercase checkers) unless
  `DetectorFactory.seed` is set; `ensure_punkt()` sets it.
- `LetterFrequencyChecker.build_description` replaces a `letter` outside a-z by
  `random.choice(string.ascii_letters)` from Python's global `random`. Two IFEval prompts ask for a
  non-letter (key 1122: '#', key 1129: '!'), so their verdicts depend on whatever consumed the global
  RNG before. `seeded_random()` pins that state for the duration of a scoring call.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


@contextmanager
def seeded_random(seed: int = 0) -> Iterator[None]:
    """Run the body with Python's global `random` seeded; the caller's RNG state is restored after."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def score_ifeval(doc: Mapping[str, Any], response: str, seed: int = 0) -> dict[str, Any]:
    """lm-eval's IFEval `process_results(doc, [response])` under `seeded_random(seed)`.

    `doc` is one IFEval record: key, prompt, instruction_id_list, kwargs. Returns
    prompt_level_strict_acc, inst_level_strict_acc, prompt_level_loose_acc, inst_level_loose_acc.
    """
    from harness.suites.punkt import ensure_punkt

    ensure_punkt()  # before lm-eval's ifeval import, which otherwise tries a download; seeds langdetect
    from lm_eval.tasks.ifeval.utils import process_results

    with seeded_random(seed):
        result: dict[str, Any] = process_results(dict(doc), [response])
    return result
