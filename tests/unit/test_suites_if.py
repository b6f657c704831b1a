"""IF scoring through lm-eval's real IFEval checkers, offline (Punkt installed by ensure_punkt)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.suites import ensure_punkt, load_suite
from harness.suites.base import Response
from harness.suites.suite import LmEvalSuite

PUNKT_FILES = {"collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"}


@pytest.fixture(scope="module")
def punkt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    saved = os.environ.get("NLTK_DATA")
    root = ensure_punkt(tmp_path_factory.mktemp("nltk"))
    yield root
    if saved is None:
        os.environ.pop("NLTK_DATA", None)
    else:
        os.environ["NLTK_DATA"] = saved


@pytest.fixture(scope="module")
def if_suite(punkt_dir: Path) -> LmEvalSuite:
    return load_suite("if-basic", limit=None, chat_template=False)


def test_ensure_punkt_writes_nltk_punkt_tab_and_nltk_uses_it(punkt_dir: Path) -> None:
    import nltk

    lang = punkt_dir / "tokenizers" / "punkt_tab" / "english"
    assert {p.name for p in lang.iterdir()} == PUNKT_FILES
    assert os.environ["NLTK_DATA"].split(os.pathsep)[0] == str(punkt_dir)
    assert Path(str(nltk.data.find("tokenizers/punkt_tab/english/"))) == lang
    assert nltk.sent_tokenize("Dr. Smith went home. He was tired.") == [
        "Dr. Smith went home.",
        "He was tired.",
    ]
    assert ensure_punkt(punkt_dir) == punkt_dir  # idempotent


def test_langdetect_is_seeded(punkt_dir: Path) -> None:
    from langdetect import DetectorFactory

    assert DetectorFactory.seed == 0


def respond(suite: LmEvalSuite, texts: dict[str, str], default: str = "") -> dict:
    """Answer each prompt by its single instruction id; other prompts get `default`."""
    items = suite.score("probe", {r: Response(text="") for i in suite.item_requests() for r in i.requests})
    by_prompt = {r.prompt: r.target for r in items}
    return {
        r: Response(text=texts.get(by_prompt[r.prompt], default))
        for i in suite.item_requests()
        for r in i.requests
    }


CRAFTED = {  # instruction id -> (a response that follows it, one that does not)
    "punctuation:no_comma": ("I like the sea and the sand.", "I like the sea, the sand, and the sun."),
    "length_constraints:number_sentences": ("One. Two. Three.", "One. Two. Three. Four. Five."),
    "detectable_format:title": ("<<A day>>\nIt rained.", "A day\nIt rained."),
    "detectable_content:postscript": ("Nice day.\nP.S. See you.", "Nice day."),
    "startend:end_checker": ("We swam. Have a nice day.", "Have a nice day. We swam."),
    "change_case:english_lowercase": ("the sea is calm and blue today.", "The Sea is calm and blue today."),
}


@pytest.mark.parametrize("instruction", sorted(CRAFTED))
def test_crafted_responses_through_the_real_checkers(if_suite: LmEvalSuite, instruction: str) -> None:
    good, bad = CRAFTED[instruction]
    for text, expected in ((good, 1.0), (bad, 0.0)):
        results = [
            r for r in if_suite.score("m", respond(if_suite, {instruction: text})) if r.target == instruction
        ]
        assert results, f"no single-instruction item for {instruction}"
        assert {r.metrics["prompt_level_strict_acc,none"] for r in results} == {expected}
        assert all(
            r.details["instructions"]
            == [{"id": instruction, "strict": bool(expected), "loose": bool(expected)}]
            for r in results
        )


def test_loose_forgives_a_first_line_strict_does_not(if_suite: LmEvalSuite) -> None:
    text = "Sure! Here it is:\nthe sea is calm and blue today."
    results = [
        r
        for r in if_suite.score("m", respond(if_suite, {"change_case:english_lowercase": text}))
        if r.target == "change_case:english_lowercase"
    ]
    assert results
    for r in results:
        assert (
            r.metrics["prompt_level_strict_acc,none"] == 0.0
            and r.metrics["prompt_level_loose_acc,none"] == 1.0
        )


def test_instruction_level_accuracy_pools_instructions(if_suite: LmEvalSuite) -> None:
    results = if_suite.score("m", respond(if_suite, {}, default="<<Title>>\nthe sea is calm and blue today."))
    flat = [v["strict"] for r in results for v in r.details["instructions"]]
    agg = if_suite.aggregate(results)["default"]
    assert agg["inst_level_strict_acc,none"] == pytest.approx(sum(flat) / len(flat))
    assert agg["prompt_level_strict_acc,none"] == pytest.approx(sum(r.score for r in results) / len(results))
    assert any(len(r.details["instructions"]) == 2 for r in results)  # some prompts carry two instructions
    assert 0.0 < agg["inst_level_strict_acc,none"] < 1.0
