"""Flexible answer extraction for GSM8K and BIG-Bench Hard, as an lm-eval filter.

lm-eval's "strict" filters only score answers in the exemplars' exact shape ("The answer is 18.",
"the answer is (B)."); a model that writes "Answer: (b)" or "$1,000" scores 0. The filter here
finds the answer leniently and rewrites it into the target's surface form, so lm-eval's
exact_match can compare it. Importing this module registers it in lm-eval's filter registry;
a task config then uses it as::

    filter_list:
      - name: flexible-extract
        filter:
          - function: harness_flexible_answer
            answer_format: multiple_choice   # see ANSWER_FORMATS / bbh_answer_format()
          - function: take_first
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lm_eval.api.filter import Filter
from lm_eval.api.registry import filter_registry

from harness.errors import HarnessError

INVALID = "[invalid]"  # lm-eval's RegexFilter fallback: nothing was extracted
FILTER_NAME = "harness_flexible_answer"

# BBH answer formats, from the targets in the BBH data (checked by tests/unit/test_extraction.py).
# Casing matters: sports_understanding's targets are lower-case "yes"/"no", the other yes/no
# subtasks use "Yes"/"No".
_BBH_FORMATS: dict[str, str] = {
    "boolean_expressions": "true_false",
    "causal_judgement": "yes_no",
    "date_understanding": "multiple_choice",
    "disambiguation_qa": "multiple_choice",
    "dyck_languages": "dyck",
    "formal_fallacies": "valid_invalid",
    "geometric_shapes": "multiple_choice",
    "hyperbaton": "multiple_choice",
    "logical_deduction_five_objects": "multiple_choice",
    "logical_deduction_seven_objects": "multiple_choice",
    "logical_deduction_three_objects": "multiple_choice",
    "movie_recommendation": "multiple_choice",
    "multistep_arithmetic_two": "integer",
    "navigate": "yes_no",
    "object_counting": "integer",
    "penguins_in_a_table": "multiple_choice",
    "reasoning_about_colored_objects": "multiple_choice",
    "ruin_names": "multiple_choice",
    "salient_translation_error_detection": "multiple_choice",
    "snarks": "multiple_choice",
    "sports_understanding": "yes_no_lower",
    "temporal_sequences": "multiple_choice",
    "tracking_shuffled_objects_five_objects": "multiple_choice",
    "tracking_shuffled_objects_seven_objects": "multiple_choice",
    "tracking_shuffled_objects_three_objects": "multiple_choice",
    "web_of_lies": "yes_no",
    "word_sorting": "word_list",
}
BBH_SUBTASKS: tuple[str, ...] = tuple(sorted(_BBH_FORMATS))

# The exact surface form of a target in each format.
_TARGET_SHAPES: dict[str, re.Pattern[str]] = {
    "multiple_choice": re.compile(r"\([A-R]\)"),  # up to 18 options (reasoning_about_colored_objects)
    "integer": re.compile(r"-?\d+"),
    # GSM8K: integers, some with thousands commas ("2,125": its exact_match ignores commas)
    "number": re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*[1-9])?"),
    "true_false": re.compile(r"True|False"),
    "yes_no": re.compile(r"Yes|No"),
    "yes_no_lower": re.compile(r"yes|no"),
    "valid_invalid": re.compile(r"valid|invalid"),
    "dyck": re.compile(r"[)\]}>](?: [)\]}>])*"),  # closing brackets, one space apart
    "word_list": re.compile(r"[a-z&']+(?: [a-z&']+)*"),  # lower-case words, one space apart
    "free_text": re.compile(r"\S(?:.*\S)?", re.DOTALL),  # anything non-empty, stripped
}
ANSWER_FORMATS: tuple[str, ...] = tuple(sorted(_TARGET_SHAPES))


def bbh_answer_format(subtask: str) -> str:
    """The answer format of a BBH subtask (e.g. "multiple_choice" for date_understanding)."""
    try:
        return _BBH_FORMATS[subtask]
    except KeyError:
        raise HarnessError(
            f"unknown BBH subtask {subtask!r}: valid names are {', '.join(BBH_SUBTASKS)}"
        ) from None


def matches_format(target: str, answer_format: str) -> bool:
    """Whether `target` is exactly in the surface form of `answer_format` (what a target looks like)."""
    return _TARGET_SHAPES[_check_format(answer_format)].fullmatch(target) is not None


def _check_format(answer_format: str) -> str:
    if answer_format not in _TARGET_SHAPES:
        raise HarnessError(f"unknown answer_format {answer_format!r}: use one of {', '.join(ANSWER_FORMATS)}")
    return answer_format


# "the answer is", "Answer:", "answer is:"; the final answer follows the last one.
_CUE = r"\banswer(?:\s+is\b\s*:?|\s*:)"
_CUE_RE = re.compile(_CUE, re.IGNORECASE)

# An option letter: "(B)" / "(b)", "B)" (upper case only: "a)" is too often prose), or a bare
# letter straight after an answer cue when nothing but punctuation or a line end follows it
# ("answer is B.", "Answer: b"), so "the answer is a bit unclear" yields nothing.
_OPTION_RE = re.compile(
    r"\(([A-Ra-r])\)"
    r"|(?<![\w(])([A-R])\)"
    rf"|(?i:{_CUE})\s*([A-Ra-r])(?=[).,;:!]|\s*$)",
    re.MULTILINE,
)
# A number: optional sign (not a hyphen inside "5-3" or "COVID-19"), optional "$", digits with
# optional thousands commas ("1,000"; "1,2,3" is three numbers), optional decimals. A trailing
# period or comma is not part of it.
_NUMBER_RE = re.compile(r"(?:(?<![\w)])([-\u2212]))?\$?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)")
_WORDS_RE: dict[str, re.Pattern[str]] = {
    "true_false": re.compile(r"\b(true|false)\b", re.IGNORECASE),
    "yes_no": re.compile(r"\b(yes|no)\b", re.IGNORECASE),
    "yes_no_lower": re.compile(r"\b(yes|no)\b", re.IGNORECASE),
    "valid_invalid": re.compile(r"\b(valid|invalid)\b", re.IGNORECASE),
}
_BRACKETS = set("()[]{}<>")


def _last_option(text: str) -> str:
    matches = list(_OPTION_RE.finditer(text))
    if not matches:
        return INVALID
    letter = next(group for group in matches[-1].groups() if group)
    return f"({letter.upper()})"


def _last_number(text: str) -> str:
    matches = list(_NUMBER_RE.finditer(text))
    if not matches:
        return INVALID
    sign, digits = matches[-1].groups()
    digits = digits.replace(",", "")
    if "." in digits:  # "18.00" -> "18", "0.50" -> "0.5": the target's form
        digits = digits.rstrip("0").rstrip(".")
    if digits.strip("0") == "":
        return "0"  # no "-0"
    return f"-{digits}" if sign else digits


def _last_word(text: str, answer_format: str) -> str:
    matches = _WORDS_RE[answer_format].findall(text)
    if not matches:
        return INVALID
    word = matches[-1].lower()
    if answer_format in ("valid_invalid", "yes_no_lower"):
        return str(word)
    return str(word.capitalize())  # True/False, Yes/No


def _free_text(text: str) -> str:
    """The line after the last answer cue, else the last non-empty line; no trailing period."""
    cues = list(_CUE_RE.finditer(text))
    candidate = ""
    if cues:
        candidate = text[cues[-1].end() :].lstrip(" \t").split("\n", 1)[0]
    if not candidate.strip():
        lines = [line for line in text.splitlines() if line.strip()]
        candidate = lines[-1] if lines else ""
    candidate = candidate.strip()
    if candidate.endswith("."):
        candidate = candidate[:-1]
    candidate = candidate.strip().strip('*`"').strip()  # **bold**, `code`, "quoted"
    return candidate or INVALID


def _dyck(text: str) -> str:
    """Free text; a pure bracket sequence becomes the target's form "] ) }" (one space apart)."""
    answer = _free_text(text)
    if answer != INVALID and set(answer) <= _BRACKETS | {" ", "\t"}:
        return " ".join(char for char in answer if char in _BRACKETS)
    return answer


def _word_list(text: str) -> str:
    """Free text as lower-case words one space apart ("Apple, banana" -> "apple banana")."""
    answer = _free_text(text)
    if answer == INVALID:
        return answer
    words = [word.strip("\"'`*[]") for word in re.split(r"[\s,]+", answer)]
    return " ".join(word for word in words if word).lower() or INVALID


_EXTRACTORS: dict[str, Callable[[str], str]] = {
    "multiple_choice": _last_option,
    "integer": _last_number,
    "number": _last_number,
    "true_false": lambda text: _last_word(text, "true_false"),
    "yes_no": lambda text: _last_word(text, "yes_no"),
    "yes_no_lower": lambda text: _last_word(text, "yes_no_lower"),
    "valid_invalid": lambda text: _last_word(text, "valid_invalid"),
    "dyck": _dyck,
    "word_list": _word_list,
    "free_text": _free_text,
}
assert set(_EXTRACTORS) == set(_TARGET_SHAPES)


def extract_flexible(text: str, answer_format: str) -> str:
    """The answer in `text`, in the target's surface form for `answer_format`; INVALID if none.

    multiple_choice: the last option letter ("(B)", "B)", "answer is B", "Answer: (b)") -> "(B)".
    integer/number: the last number, without commas, "$" and trailing period; "18.00" -> "18".
    true_false/yes_no/yes_no_lower/valid_invalid: the last such word, in the targets' casing.
    free_text: the rest of the line after the last "answer is"/"answer:", else the last non-empty
    line, without a trailing period. dyck/word_list: free text, then spaced as the targets are.
    """
    extractor = _EXTRACTORS[_check_format(answer_format)]
    if not isinstance(text, str):
        return INVALID
    return extractor(text)


class FlexibleAnswerFilter(Filter):
    """lm-eval filter `harness_flexible_answer`: extract_flexible on every response."""

    def __init__(self, answer_format: str = "free_text", **kwargs: Any) -> None:
        if kwargs:
            raise HarnessError(
                f"filter {FILTER_NAME} takes only answer_format, not {', '.join(sorted(kwargs))}"
            )
        self.answer_format = _check_format(answer_format)

    def apply(self, resps: Iterable[Sequence[Any]], docs: Sequence[dict[str, Any]]) -> list[list[str]]:
        return [[extract_flexible(resp, self.answer_format) for resp in inst] for inst in resps]


def _register() -> None:
    """Register once; a re-import (or importlib.reload) keeps the first class instead of raising."""
    existing = filter_registry.get(FILTER_NAME, None)
    if existing is None:
        filter_registry.register(FILTER_NAME)(FlexibleAnswerFilter)
        return
    if getattr(existing, "__module__", None) != __name__:
        raise HarnessError(f"lm-eval filter name {FILTER_NAME!r} is already taken by {existing!r}")


_register()
