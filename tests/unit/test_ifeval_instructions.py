"""IFEval scoring through lm-eval's checkers, checked against IFEval's definitions (Zhou et al. 2023).

Every case goes through `lm_eval.tasks.ifeval.utils.process_results(doc, [response])`, the function the
harness scores with. Expected values are written from the instruction descriptions of the paper
(Table 1) and of its released prompts; where lm-eval does something the definition does not say, the
test says so ("documents").

Loose scoring (paper, section 2.2): an instruction counts as followed if any of eight transforms of the
response follows it: the response itself, with markdown asterisks removed, with its first line
removed, its last line removed, both removed, and each of those three with asterisks removed. A
single-line response without '*' therefore has loose == strict.
"""

from __future__ import annotations

import json
import os
import random
import string
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from harness.suites import ensure_punkt
from harness.suites.ifeval_support import score_ifeval, seeded_random

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ifeval" / "input_data.jsonl"
PROMPT = "Write a short text."

Scorer = Callable[[dict[str, Any], str], dict[str, Any]]


@pytest.fixture(scope="module")
def process_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scorer]:
    """(doc, response) -> lm-eval's IFEval `process_results(doc, [response])`, imported offline."""
    saved = os.environ.get("NLTK_DATA")
    ensure_punkt(tmp_path_factory.mktemp("nltk"))
    from lm_eval.tasks.ifeval.utils import process_results as lm_eval_process_results

    def score(doc: dict[str, Any], response: str) -> dict[str, Any]:
        result: dict[str, Any] = lm_eval_process_results(doc, [response])
        return result

    yield score
    if saved is None:
        os.environ.pop("NLTK_DATA", None)
    else:
        os.environ["NLTK_DATA"] = saved


@pytest.fixture(scope="module")
def registry(process_results: Scorer) -> dict[str, Any]:
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    return dict(INSTRUCTION_DICT)


def doc_for(instruction_id: str, kwargs: dict[str, Any], prompt: str = PROMPT) -> dict[str, Any]:
    return {"key": 1, "prompt": prompt, "instruction_id_list": [instruction_id], "kwargs": [kwargs]}


def expected(strict: bool, loose: bool) -> dict[str, Any]:
    return {
        "prompt_level_strict_acc": strict,
        "inst_level_strict_acc": [strict],
        "prompt_level_loose_acc": loose,
        "inst_level_loose_acc": [loose],
    }


class Case(NamedTuple):
    instruction: str
    kwargs: dict[str, Any]
    response: str
    strict: bool
    loose: bool
    why: str


def cases(instruction: str, kwargs: dict[str, Any], *rows: tuple[str, bool, bool, str]) -> list[Case]:
    """Rows of (response, strict verdict, loose verdict, why) for one instruction and its kwargs."""
    return [Case(instruction, kwargs, *row) for row in rows]


T, F = True, False
HAIKU = {"prompt_to_repeat": "Write a haiku about rain."}
END = {"end_phrase": "Any other questions?"}
NTH = {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}
SUNNY = "the weather is sunny today and we are going to the park."
SONNIG = "das wetter ist heute sonnig und wir gehen in den park."

# fmt: off
CASES: list[Case] = [
    # "Include keywords {keywords} in the response." (case-insensitive search)
    *cases("keywords:existence", {"keywords": ["ocean", "blue"]},
           ("The blue ocean is deep.", T, T, "both"),
           ("OCEAN waves look Blue.", T, T, "any case"),
           ("Oceanic trenches are bluer.", T, T, "a substring counts"),
           ("The sea is deep and blue.", F, F, "one missing")),
    # "In your response, the word {keyword} should appear {relation} {frequency} times."
    *cases("keywords:frequency", {"keyword": "cat", "frequency": 3, "relation": "at least"},
           ("A cat, a Cat and a CAT.", T, T, "3 >= 3, any case"),
           ("A cat and a cat.", F, F, "2 < 3")),
    *cases("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"},
           ("One cat sat.", T, T, "1 < 2"),
           ("A cat and a cat.", F, F, "2 is not < 2")),
    # "Do not include keywords {forbidden words} in the response." (whole words, any case)
    *cases("keywords:forbidden_words", {"forbidden_words": ["bad", "ugly"]},
           ("A good and pretty day.", T, T, "none"),
           ("Wear your badge.", T, T, "part of a word"),
           ("That was BAD.", F, F, "any case"),
           ("Fine.\nUgly day.\nFine.", F, F, "a middle line survives every loose transform")),
    # "In your response, the letter {letter} should appear {relation} {frequency} times."
    *cases("keywords:letter_frequency", {"letter": "q", "let_frequency": 3, "let_relation": "at least"},
           ("Quick quiet quest.", T, T, "Q counts as q"),
           ("A quick quiz.", F, F, "2 < 3")),
    *cases("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "less than"},
           ("A zebra ran.", T, T, "1 < 2"),
           ("Zigzag.", F, F, "2 is not < 2")),
    # "Your ENTIRE response should be in {language} language, no other language is allowed."
    *cases("language:response_language", {"language": "de"},
           ("Heute scheint die Sonne und wir gehen im Park spazieren.", T, T, "German"),
           ("Today the sun is shining and we are going for a walk in the park.", F, F, "English"),
           ("12345 678", T, T, "no letters: langdetect raises, IFEval counts it as followed")),
    # "Your response should contain {relation} {N} sentences." (NLTK Punkt sentence splitter)
    *cases("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
           ("It rained. We stayed in.", T, T, "2 < 3"),
           ("It rained. We stayed in. We read.", F, F, "3 is not < 3"),
           ("Dr. Smith arrived. He sat down.", T, T, "Punkt: 'Dr.' ends no sentence, so 2")),
    *cases("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
           ("It rained. We stayed in. We read.", T, T, "3 >= 3"),
           ("Dr. Smith met Mr. Brown. They talked.", F, F, "Punkt: 2 sentences, not 4")),
    # "There should be {N} paragraphs. Paragraphs are separated with the markdown divider: ***"
    *cases("length_constraints:number_paragraphs", {"num_paragraphs": 3},
           ("One.\n***\nTwo.\n***\nThree.", T, T, "3"),
           ("***\nOne.\n***\nTwo.\n***\nThree.\n***", T, T, "dividers at the ends make no paragraph"),
           ("One.\n***\nTwo.", F, F, "2"),
           ("One.\n***\n***\nThree.", F, F, "an empty paragraph in the middle fails")),
    # "Answer with {relation} {N} words." (a word: a run of \w)
    *cases("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
           ("One two three four.", T, T, "4 < 5"),
           ("One two three four five.", F, F, "5 is not < 5")),
    *cases("length_constraints:number_words", {"num_words": 5, "relation": "at least"},
           ("I don't know it.", T, T, "don't is 2 words (don, t): 5"),
           ("One two three four.", F, F, "4 < 5")),
    # "There should be {N} paragraphs, separated by two new lines. Paragraph {i} must start with {word}."
    *cases("length_constraints:nth_paragraph_first_word", NTH,
           ("It rained all day.\n\nHowever, we went out.", T, T, "punctuation after the word dropped"),
           ('It rained.\n\n"HOWEVER," she said, "we go."', T, T, "a leading quote dropped, any case"),
           ("It rained all day.\n\nBut we went out.", F, F, "wrong first word"),
           ("However, it rained.\n\nWe went out.", F, F, "the word starts the wrong paragraph"),
           ("However it rained.\n\nHowever we went.\n\nEnd", F, T, "3; loose drops the last line")),
    # "The response must contain at least {N} placeholders represented by square brackets"
    *cases("detectable_content:number_placeholders", {"num_placeholders": 2},
           ("Dear [name], see you at [address].", T, T, "2"),
           ("Dear [name], see you soon.", F, F, "1")),
    # "At the end of your response, please explicitly add a postscript starting with {marker}"
    *cases("detectable_content:postscript", {"postscript_marker": "P.S."},
           ("See you soon.\nP.S. Bring snacks.", T, T, "P.S."),
           ("See you soon.\np.s. bring snacks.", T, T, "any case"),
           ("See you soon. PS bring snacks.", F, F, "no dots")),
    *cases("detectable_content:postscript", {"postscript_marker": "P.P.S"},
           ("Hi.\nP.S. One.\nP.P.S. Two.", T, T, "P.P.S"),
           ("Hi.\nP.S. One.", F, F, "P.S. is not P.P.S")),
    # "Your answer must contain exactly {N} bullet points" (markdown '* ' or '- ' items)
    *cases("detectable_format:number_bullet_lists", {"num_bullets": 2},
           ("* Apples\n* Pears", T, T, "2 stars"),
           ("- Apples\n- Pears", T, T, "2 dashes"),
           ("**Fruit**\n* Apples\n* Pears", T, T, "a bold line is no bullet"),
           ("* Apples\n* Pears\n* Plums", F, T, "3, not exactly 2; loose drops the first or last item"),
           ("* Apples", F, F, "1")),
    # "Answer with one of the following options: My answer is yes. / no. / maybe."
    *cases("detectable_format:constrained_response", {},
           ("My answer is yes.", T, T, "an option"),
           ("My answer is maybe. It depends.", T, T, "contains an option"),
           ("Yes, definitely.", F, F, "not an option"),
           ("my answer is yes.", F, F, "options are case-sensitive")),
    # "Highlight at least {N} sections in your answer with markdown, i.e. *highlighted section*."
    *cases("detectable_format:number_highlighted_sections", {"num_highlights": 2},
           ("*First* and *second* points.", T, T, "2 italic"),
           ("**Bold one** and *italic two*.", T, T, "bold counts"),
           ("Only *one* here.", F, F, "1"),
           ("Empty * * marks and *one*.", F, F, "an empty highlight does not count")),
    # "Your response must have {N} sections. Mark the beginning of each section with {spliter} X"
    *cases("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
           ("Section 1\nIntro.\nSection 2\nBody.", T, T, "2"),
           ("Section 1\nEverything.", F, F, "1"),
           ("SECTION 1\nIntro.\nSECTION 2\nBody.", F, F, "the spliter is case-sensitive")),
    *cases("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 3},
           ("SECTION 1 a. SECTION 2 b. SECTION 3 c.", T, T, "3 on one line")),
    # "Entire output should be wrapped in JSON format. You can use markdown ticks such as ```."
    *cases("detectable_format:json_format", {},
           ('{"name": "Ada", "year": 1815}', T, T, "JSON"),
           ('```json\n{"name": "Ada"}\n```', T, T, "fenced JSON"),
           ("Name: Ada", F, F, "not JSON"),
           ('Here it is: {"name": "Ada"}', F, F, "text around it"),
           ('Sure, here:\n{"a": 1}\nHope it helps!\nBye.', F, F, "loose drops one line per end, not two")),
    # "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>."
    *cases("detectable_format:title", {},
           ("<<Ode to Rain>>\nDrops fall.", T, T, "a title"),
           ("Ode to Rain\nDrops fall.", F, F, "no brackets"),
           ("<<  >>\nDrops fall.", F, F, "a blank title"),
           ("<<Ode to\nRain>>", F, F, "a title is on one line")),
    # "Give two different responses. Responses and only responses should be separated by ******."
    *cases("combination:two_responses", {},
           ("Rain is wet.\n******\nSun is warm.", T, T, "two"),
           ("Rain is wet.\n******\nRain is wet.", F, F, "not different"),
           ("Just one answer.", F, F, "one"),
           ("A.\n******\nB.\n******\nC.", F, T, "three; loose drops the first or last one")),
    # "First repeat the request word for word without change, then give your answer"
    *cases("combination:repeat_prompt", HAIKU,
           ("Write a haiku about rain. Drops tap the window.", T, T, "repeated"),
           ("write a HAIKU about rain.\nDrops fall.", T, T, "any case"),
           ("Drops tap the window.", F, F, "not repeated"),
           ("Here: Write a haiku about rain. Drops.", F, F, "words before it")),
    # "Finish your response with this exact phrase {end_phrase}. No other words should follow."
    *cases("startend:end_checker", END,
           ("We swam all day. Any other questions?", T, T, "ends with it"),
           ('"We swam. any other questions?"', T, T, "any case; a closing quote may follow"),
           ("Any other questions? We swam.", F, F, "at the start"),
           ("We swam. Any other questions? Bye.", F, F, "words after it"),
           ("Any other questions?\nWe swam.\nBye.", F, F, "first line; no transform makes it the end")),
    # "In your response, words with all capital letters should appear {relation} {N} times."
    *cases("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
           ("This is VERY VERY important.", T, T, "2"),
           ("This is VERY important.", F, F, "1")),
    *cases("change_case:capital_word_frequency", {"capital_frequency": 1, "capital_relation": "at least"},
           ("I think so.", T, T, "'I' is an all-capital word")),
    *cases("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
           ("Only ONE word-here.", T, T, "1 < 2"),
           ("TWO BIG words.", F, F, "2 is not < 2")),
    # "Your entire response should be in English, and in all capital letters."
    *cases("change_case:english_capital", {},
           (SUNNY.upper(), T, T, "capital English"),
           (SUNNY.capitalize(), F, F, "not all capitals"),
           (SONNIG.upper(), F, F, "capital German")),
    # "Your entire response should be in English, and in all lowercase letters."
    *cases("change_case:english_lowercase", {},
           (SUNNY, T, T, "lowercase English"),
           (SUNNY.capitalize(), F, F, "one capital"),
           (SONNIG, F, F, "lowercase German")),
    # "In your entire response, refrain from the use of any commas."
    *cases("punctuation:no_comma", {},
           ("Apples and pears are fruit.", T, T, "none"),
           ("Apples, pears and plums.", F, F, "a comma"),
           ("Apples\uff0cpears.", T, T, "documents: only the ASCII comma is checked"),
           ("Fine.\nA, b.\nFine.", F, F, "a middle line survives every transform")),
    # "Wrap your entire response with double quotation marks."
    *cases("startend:quotation", {},
           ('"Hello there."', T, T, "wrapped"),
           ('  "Hello there."\n', T, T, "surrounding whitespace is ignored"),
           ("Hello there.", F, F, "not wrapped"),
           ('"', F, F, "a lone quote"),
           ('"Hello" there.', F, F, "does not end with a quote")),
]
# fmt: on


def case_id(case: Case) -> str:
    return f"{case.instruction}-{case.why[:40]}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_instruction_case(process_results: Scorer, case: Case) -> None:
    result = process_results(doc_for(case.instruction, case.kwargs), case.response)
    assert result == expected(case.strict, case.loose), case.why


def test_every_registered_instruction_has_pass_and_fail_cases(registry: dict[str, Any]) -> None:
    assert len(registry) == 25
    assert {c.instruction for c in CASES} == set(registry)
    for instruction in registry:
        verdicts = {c.strict for c in CASES if c.instruction == instruction}
        assert verdicts == {True, False}, instruction


@pytest.mark.parametrize("blank", ["", "   \n\t "])
def test_blank_response_follows_nothing(
    process_results: Scorer, registry: dict[str, Any], blank: str
) -> None:
    """IFEval counts an empty response as not following, even instructions it would satisfy (no comma)."""
    for instruction in registry:
        kwargs = next(c.kwargs for c in CASES if c.instruction == instruction)
        assert process_results(doc_for(instruction, kwargs), blank) == expected(False, False), instruction


# ---- loose scoring: the eight transforms ----


def paper_variants(response: str) -> dict[str, str]:
    """The eight loose transforms of IFEval section 2.2 (a text with a line dropped is stripped)."""
    lines = response.split("\n")
    base = {
        "unchanged": response,
        "first line removed": "\n".join(lines[1:]).strip(),
        "last line removed": "\n".join(lines[:-1]).strip(),
        "both removed": "\n".join(lines[1:-1]).strip(),
    }
    out = dict(base)
    for name, text in base.items():
        out["asterisks removed" if name == "unchanged" else f"asterisks and {name}"] = text.replace("*", "")
    return out


class LooseCase(NamedTuple):
    instruction: str
    kwargs: dict[str, Any]
    response: str
    transform: str  # the one transform (or ones giving the same text) under which the response follows


# fmt: off
LOOSE_CASES: list[LooseCase] = [
    LooseCase("detectable_format:number_highlighted_sections", {"num_highlights": 1},
              "Rain is *wet*.", "unchanged"),
    LooseCase("keywords:existence", {"keywords": ["blue ocean"]},
              "We sailed the **blue** ocean.", "asterisks removed"),
    LooseCase("combination:repeat_prompt", HAIKU,
              "Sure, here you go:\nWrite a haiku about rain. Drops tap.", "first line removed"),
    LooseCase("startend:end_checker", END,
              "We swam all day. Any other questions?\nHave a nice day!", "last line removed"),
    LooseCase("startend:quotation", {},
              'Sure:\n"Hello there."\nHope this helps.', "both removed"),
    LooseCase("combination:repeat_prompt", HAIKU,
              "Sure:\n**Write a haiku about rain.** Drops fall.", "asterisks and first line removed"),
    LooseCase("startend:end_checker", END,
              "We swam. **Any other questions?**\nBye!", "asterisks and last line removed"),
    LooseCase("startend:quotation", {},
              'Sure:\n**"Hello there."**\nBye.', "asterisks and both removed"),
]
# fmt: on


def test_loose_cases_cover_all_eight_transforms() -> None:
    assert {c.transform for c in LOOSE_CASES} == set(paper_variants("x"))
    assert len(paper_variants("x")) == 8


@pytest.mark.parametrize("case", LOOSE_CASES, ids=[c.transform for c in LOOSE_CASES])
def test_loose_forgives_through_one_transform(process_results: Scorer, case: LooseCase) -> None:
    doc = doc_for(case.instruction, case.kwargs)
    strict_ok = case.transform == "unchanged"
    assert process_results(doc, case.response) == expected(strict_ok, True)
    variants = paper_variants(case.response)
    following = {
        name for name, text in variants.items() if process_results(doc, text)["prompt_level_strict_acc"]
    }
    same_text = {name for name, text in variants.items() if text == variants[case.transform]}
    assert following == same_text  # e.g. without '*' in the text, "asterisks and X removed" is X


def test_loose_is_any_of_the_eight_strict_verdicts(process_results: Scorer) -> None:
    """lm-eval's loose verdict equals the paper's definition on every response in this file."""
    probes = [(c.instruction, c.kwargs, c.response) for c in CASES]
    probes += [(c.instruction, c.kwargs, c.response) for c in LOOSE_CASES]
    for instruction, kwargs, response in probes:
        doc = doc_for(instruction, kwargs)
        by_definition = any(
            process_results(doc, text)["prompt_level_strict_acc"]
            for text in paper_variants(response).values()
        )
        assert process_results(doc, response)["prompt_level_loose_acc"] == by_definition, (
            instruction,
            response,
        )


def test_sure_here_is_line_breaks_strict_only(process_results: Scorer) -> None:
    chatty = "Sure, here is my answer:\n"
    for instruction, kwargs, body in [
        ("combination:repeat_prompt", HAIKU, "Write a haiku about rain. Drops fall."),
        ("startend:quotation", {}, '"Drops fall."'),
        ("change_case:english_lowercase", {}, "the weather is sunny today and we are going to the park."),
        ("detectable_format:json_format", {}, '{"a": 1}'),
        ("punctuation:no_comma", {}, "Drops fall on the roof."),
    ]:
        doc = doc_for(instruction, kwargs)
        assert process_results(doc, body) == expected(True, True), instruction
        assert process_results(doc, chatty + body) == expected(False, True), instruction


def test_markdown_asterisks_break_strict_only(process_results: Scorer) -> None:
    probes: list[tuple[str, dict[str, Any], str]] = [
        ("keywords:existence", {"keywords": ["blue ocean"]}, "The **blue** ocean."),
        ("startend:end_checker", END, "Done. *Any other questions?*"),
        ("combination:repeat_prompt", HAIKU, "**Write a haiku about rain.** Drops."),
        ("detectable_format:json_format", {}, '**{"a": 1}**'),
    ]
    for instruction, kwargs, text in probes:
        assert process_results(doc_for(instruction, kwargs), text) == expected(False, True), instruction


def test_prompt_level_needs_every_instruction(process_results: Scorer) -> None:
    doc = {
        "key": 7,
        "prompt": PROMPT,
        "instruction_id_list": ["combination:repeat_prompt", "startend:end_checker"],
        "kwargs": [HAIKU, END],
    }
    assert process_results(doc, "Write a haiku about rain. Drops fall. Any other questions?") == {
        "prompt_level_strict_acc": True,
        "inst_level_strict_acc": [True, True],
        "prompt_level_loose_acc": True,
        "inst_level_loose_acc": [True, True],
    }
    assert process_results(doc, "Write a haiku about rain. Drops fall.") == {
        "prompt_level_strict_acc": False,
        "inst_level_strict_acc": [True, False],
        "prompt_level_loose_acc": False,
        "inst_level_loose_acc": [True, False],
    }


def test_loose_picks_a_transform_per_instruction(process_results: Scorer) -> None:
    """IFEval's loose prompt-level verdict is all(per-instruction loose verdicts); each instruction may be
    satisfied by a different transform. Here no single transform satisfies both instructions."""
    doc = {
        "key": 8,
        "prompt": PROMPT,
        "instruction_id_list": ["startend:end_checker", "detectable_format:title"],
        "kwargs": [END, {}],
    }
    response = "We swam. Any other questions?\n<<Swim>>"
    assert not any(
        process_results(doc, text)["prompt_level_strict_acc"] for text in paper_variants(response).values()
    )
    assert process_results(doc, response) == {
        "prompt_level_strict_acc": False,
        "inst_level_strict_acc": [False, True],
        "prompt_level_loose_acc": True,
        "inst_level_loose_acc": [True, True],
    }


# ---- determinism: langdetect ----


def test_ensure_punkt_seeds_langdetect(tmp_path: Path) -> None:
    import nltk
    from langdetect import DetectorFactory

    saved_env, saved_path, saved_seed = (
        os.environ.get("NLTK_DATA"),
        list(nltk.data.path),
        DetectorFactory.seed,
    )
    DetectorFactory.seed = None
    try:
        ensure_punkt(tmp_path)
        assert DetectorFactory.seed == 0
    finally:
        DetectorFactory.seed = saved_seed
        nltk.data.path[:] = saved_path
        if saved_env is None:
            os.environ.pop("NLTK_DATA", None)
        else:
            os.environ["NLTK_DATA"] = saved_env
    assert saved_seed == 0  # the module fixture's ensure_punkt() had already seeded it


AMBIGUOUS = ["good morning", "we play", "see you later", "me too"]  # langdetect hesitates on these


def test_langdetect_verdicts_are_identical_across_fresh_factories(
    process_results: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langdetect import DetectorFactory, detector_factory

    assert DetectorFactory.seed == 0
    docs = [
        doc_for("change_case:english_lowercase", {}),
        doc_for("language:response_language", {"language": "en"}),
    ]
    seen: set[str] = set()
    for _ in range(3):
        monkeypatch.setattr(detector_factory, "_factory", None)  # langdetect reloads its profiles
        for _ in range(2):
            seen.add(json.dumps([process_results(d, text) for d in docs for text in AMBIGUOUS]))
    assert len(seen) == 1


def test_unseeded_langdetect_is_random(process_results: Scorer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the seed matters: unseeded, the same text gets different languages (so the test above can fail)."""
    import langdetect
    from langdetect import DetectorFactory

    monkeypatch.setattr(DetectorFactory, "seed", None)
    assert any(len({langdetect.detect(text) for _ in range(30)}) > 1 for text in AMBIGUOUS)


# ---- where lm-eval 0.4.13 is not IFEval's definition (documents the actual behaviour) ----


def test_documents_letter_frequency_with_a_non_letter(
    process_results: Scorer, registry: dict[str, Any]
) -> None:
    """The letter-frequency checker replaces a `letter` outside a-z by a random ASCII letter.

    IFEval prompts 1122 ('#') and 1129 ('!') ask for a non-letter. By the instruction, "#1 #2 #3 #4"
    has '#' 4 times and follows "at least 4"; lm-eval counts a random letter instead, which this text
    has 0 times, so it fails whatever the RNG state. (google-research's instructions.py did the same at
    commit 83282e4, 2024; at 3f357bd, 2025, it keeps any single character and counts '#'.)
    """
    kwargs = {"letter": "#", "let_frequency": 4, "let_relation": "at least"}
    for seed in range(5):
        with seeded_random(seed):
            verdict = process_results(doc_for("keywords:letter_frequency", kwargs), "#1 #2 #3 #4")
            checker = registry["keywords:letter_frequency"]("keywords:letter_frequency")
            checker.build_description(**kwargs)
        assert verdict == expected(F, F)
        assert checker.get_instruction_args()["letter"] in string.ascii_lowercase
    less = {"letter": "!", "let_frequency": 2, "let_relation": "less than"}
    assert process_results(doc_for("keywords:letter_frequency", less), "!!!!! 123") == expected(T, T)


def test_documents_falsy_kwargs_are_dropped(process_results: Scorer) -> None:
    """lm-eval drops every falsy kwarg (`if v`), not only None; the official code passes them through.

    With num_highlights=0 the official checker asks for at least 0 highlights (always followed); lm-eval
    drops the 0 and draws a random minimum in 1..4, so a text without highlights fails. No IFEval prompt
    has a falsy kwarg (test_data_kwargs_build_their_checkers), so IFEval's scores are not affected.
    """
    assert process_results(
        doc_for("detectable_format:number_highlighted_sections", {"num_highlights": 0}), "No highlights here."
    ) == expected(F, F)


# ---- the IFEval data: 541 prompts, 25 instruction types ----


def load_rows() -> list[dict[str, Any]]:
    if not DATA.is_file():
        pytest.skip(f"IFEval data not found at {DATA} (the shared data folder beside the clone)")
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


NON_LETTER_KEYS = {1122, 1129}  # keywords:letter_frequency with letter '#' and '!'


def test_data_541_prompts_25_instruction_types(registry: dict[str, Any]) -> None:
    rows = load_rows()
    assert len(rows) == 541
    assert len({r["key"] for r in rows}) == 541
    assert len({r["prompt"] for r in rows}) == 541  # IFEval matches responses to prompts by prompt text
    ids = {i for r in rows for i in r["instruction_id_list"]}
    assert len(ids) == 25
    assert ids == set(registry)
    assert all(len(r["instruction_id_list"]) == len(r["kwargs"]) for r in rows)
    assert sum(len(r["instruction_id_list"]) for r in rows) == 834


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, list | tuple):
        return sorted({_norm(v) for v in value})
    return value


def test_data_kwargs_build_their_checkers(registry: dict[str, Any]) -> None:
    """Every prompt's kwargs build its checkers, nothing is drawn at random except the two non-letters."""
    changed: set[tuple[int, str]] = set()
    for row in load_rows():
        for instruction, kwargs in zip(row["instruction_id_list"], row["kwargs"], strict=True):
            assert all(kwargs.values()), (row["key"], kwargs)  # lm-eval's `if v` filter keeps them all
            checker = registry[instruction](instruction)
            checker.build_description(**kwargs)
            args = checker.get_instruction_args()
            if not kwargs:
                assert not args, (row["key"], instruction)
                continue
            assert set(kwargs) <= set(args), (row["key"], instruction)
            if any(_norm(args[k]) != _norm(v) for k, v in kwargs.items()):
                changed.add((row["key"], instruction))
    assert changed == {(key, "keywords:letter_frequency") for key in NON_LETTER_KEYS}


DUMMY = (
    'Sure, here it is:\n<<A Title>>\n*Section 1* "Hello" there!\n* one\n* two\nP.S. bye. Any other questions?'
)


def _score_all(process_results: Scorer, rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    return {r["key"]: [process_results(r, text) for text in ("", DUMMY)] for r in rows}


def test_data_scoring_is_deterministic(process_results: Scorer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty and dummy responses for all 541 prompts, twice, with different global RNG states and a fresh
    langdetect factory: identical, except the two non-letter prompts (see the next test)."""
    from langdetect import detector_factory

    rows = load_rows()
    with seeded_random(1):
        first = _score_all(process_results, rows)
    monkeypatch.setattr(detector_factory, "_factory", None)
    with seeded_random(2):
        second = _score_all(process_results, rows)
    assert {k for k in first if first[k] != second[k]} <= NON_LETTER_KEYS
    for key, (empty, _) in first.items():
        n = len(empty["inst_level_strict_acc"])
        assert empty == {
            "prompt_level_strict_acc": False,
            "inst_level_strict_acc": [False] * n,
            "prompt_level_loose_acc": False,
            "inst_level_loose_acc": [False] * n,
        }, key
    assert 0 < sum(dummy["prompt_level_loose_acc"] for _, dummy in first.values()) < len(rows)


def test_data_non_letter_prompts_need_a_pinned_rng(process_results: Scorer) -> None:
    """Prompts 1122 and 1129: lm-eval's verdict moves with the global RNG; score_ifeval pins it."""
    rows = {r["key"]: r for r in load_rows() if r["key"] in NON_LETTER_KEYS}
    assert set(rows) == NON_LETTER_KEYS
    for key, row in rows.items():
        outcomes = set()
        for seed in range(40):
            with seeded_random(seed):
                outcomes.add(json.dumps(process_results(row, DUMMY)))
        assert len(outcomes) > 1, key
        pinned = set()
        for seed in range(5):
            with seeded_random(seed):  # a different caller state each time; score_ifeval pins its own
                pinned.add(json.dumps(score_ifeval(row, DUMMY)))
        assert len(pinned) == 1, key


def test_score_ifeval_leaves_the_callers_rng_alone(process_results: Scorer) -> None:
    doc = doc_for(
        "keywords:letter_frequency", {"letter": "#", "let_frequency": 4, "let_relation": "at least"}
    )
    with seeded_random(3):
        before = random.getstate()
        assert score_ifeval(doc, "#1 #2 #3 #4") == process_results(doc, "#1 #2 #3 #4")
        assert random.getstate() != before  # process_results drew from the global RNG
    with seeded_random(3):
        score_ifeval(doc, "#1 #2 #3 #4")
        assert random.getstate() == before  # score_ifeval restored it


def test_data_rows_in_hugging_face_form_score_the_same(process_results: Scorer) -> None:
    """google/IFEval (what lm-eval's task reads) gives every kwargs dict all keys, absent ones None;
    lm-eval drops the Nones, so each row scores as the released jsonl row does."""
    rows = load_rows()
    keys = sorted({k for r in rows for kw in r["kwargs"] for k in kw})
    for row in rows:
        padded = {**row, "kwargs": [{k: kw.get(k) for k in keys} for kw in row["kwargs"]]}
        with seeded_random(0):
            raw = process_results(row, DUMMY)
        with seeded_random(0):
            assert process_results(padded, DUMMY) == raw, row["key"]


def test_suite_scoring_pins_the_global_rng_for_letter_frequency() -> None:
    """Key 1122's checker (at least 4 '#') draws a replacement letter from Python's global RNG; the
    harness's scoring path seeds it per item, so the verdict does not depend on what ran before."""
    import random

    from harness.suites.lmeval_bridge import score_instances

    class _Inst:
        def __init__(self, doc: dict[str, object], text: str) -> None:
            self.doc, self.doc_id, self.idx = doc, 0, 0
            self.resps: list[object] = [text]
            self.filtered_resps: dict[str, object] = {}

    from lm_eval.tasks.ifeval.utils import process_results

    class _Task:
        def apply_filters(self) -> None:
            for inst in self._instances:
                inst.filtered_resps = {"none": inst.resps[0]}

        def process_results(self, doc: dict[str, object], results: list[str]) -> dict[str, object]:
            return process_results(doc, results)

    doc = {
        "key": 1122,
        "prompt": "p",
        "instruction_id_list": ["keywords:letter_frequency"],
        "kwargs": [{"letter": "#", "let_frequency": 4, "let_relation": "at least"}],
    }
    verdicts = set()
    for seed in range(12):
        random.seed(seed)
        text = "aaaa bbbb cccc dddd eeee"
        out = score_instances(_Task(), [_Inst(doc, text)], [text])
        verdicts.add(out[0]["metrics"]["prompt_level_strict_acc,none"])
    assert len(verdicts) == 1
