"""Answer extraction for GSM8K and BBH: lm-eval's strict filters and our flexible one, scored by
lm-eval's own exact_match.

Expected values come from the benchmarks' definitions: GSM8K's answer is the integer after "####"
(sometimes written with thousands commas), its CoT exemplars end "The answer is N."; BBH's CoT
exemplars end "So the answer is X." with X in the target's exact form.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

import harness.suites.extract as extract
from harness.errors import HarnessError
from harness.suites.extract import (
    ANSWER_FORMATS,
    BBH_SUBTASKS,
    FILTER_NAME,
    INVALID,
    bbh_answer_format,
    extract_flexible,
    matches_format,
)

DATA = Path(__file__).parents[2].parent / "shared" / "data"
BBH_DATA = DATA / "bbh" / "bbh"
GSM8K_DATA = DATA / "gsm8k"

# BBH items whose option list was split at commas in the source data, so the target is the
# option's text rather than a letter. No extraction can score these; they stay in the data.
BBH_NONCONFORMING_TARGETS = {
    ("movie_recommendation", "Monsters, Inc"),
    ("ruin_names", "dearth, wind, & fire"),
    ("ruin_names", "rita, sue and bob poo"),
}


def lm_eval_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def load_lmeval_yaml(relative: str) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    config: dict[str, Any] = load_yaml(str(lm_eval_tasks_dir() / relative), resolve_func=True)
    return config


def flexible_pipeline(answer_format: str) -> dict[str, Any]:
    """The filter_list entry the suites put in task configs (the report's YAML snippet)."""
    return {
        "name": "flexible-extract",
        "filter": [
            {"function": FILTER_NAME, "answer_format": answer_format},
            {"function": "take_first"},
        ],
    }


def run_filters(filter_list: list[dict[str, Any]], responses: list[str]) -> dict[str, list[str]]:
    """Each filter pipeline over the responses, built as ConfigurableTask builds them."""
    from lm_eval.api.instance import Instance
    from lm_eval.filters import build_filter_ensemble

    out: dict[str, list[str]] = {}
    for pipeline in filter_list:
        components = [
            [step["function"], {k: v for k, v in step.items() if k != "function"}]
            for step in pipeline["filter"]
        ]
        ensemble = build_filter_ensemble(pipeline["name"], components)
        instances = [
            Instance(request_type="generate_until", doc={}, arguments=("", {}), idx=0, resps=[text])
            for text in responses
        ]
        ensemble.apply(instances)
        out[pipeline["name"]] = [inst.filtered_resps[pipeline["name"]] for inst in instances]
    return out


def lm_eval_exact_match(prediction: str, gold: str, **kwargs: Any) -> float:
    from lm_eval.api.registry import get_metric

    return float(
        get_metric("exact_match")(references=[gold], predictions=[prediction], **kwargs)["exact_match"]
    )


# --- the BBH format table ---------------------------------------------------------------------


def test_bbh_table_has_the_27_subtasks_sorted() -> None:
    assert len(BBH_SUBTASKS) == 27
    assert list(BBH_SUBTASKS) == sorted(BBH_SUBTASKS)
    assert set(BBH_SUBTASKS) == {
        path.stem
        for path in (lm_eval_tasks_dir() / "bbh" / "cot_fewshot").glob("*.yaml")
        if path.stem[0] != "_"
    }
    assert {bbh_answer_format(name) for name in BBH_SUBTASKS} <= set(ANSWER_FORMATS)


@pytest.mark.parametrize(
    ("subtask", "answer_format"),
    [
        ("sports_understanding", "yes_no_lower"),  # "yes"/"no", unlike the other yes/no subtasks
        ("causal_judgement", "yes_no"),
        ("navigate", "yes_no"),
        ("web_of_lies", "yes_no"),
        ("boolean_expressions", "true_false"),
        ("formal_fallacies", "valid_invalid"),
        ("object_counting", "integer"),
        ("multistep_arithmetic_two", "integer"),
        ("dyck_languages", "dyck"),
        ("word_sorting", "word_list"),
        ("reasoning_about_colored_objects", "multiple_choice"),
    ],
)
def test_bbh_answer_format(subtask: str, answer_format: str) -> None:
    assert bbh_answer_format(subtask) == answer_format


def test_unknown_subtask_lists_the_valid_names() -> None:
    with pytest.raises(HarnessError, match="unknown BBH subtask 'date'") as info:
        bbh_answer_format("date")
    assert all(name in str(info.value) for name in BBH_SUBTASKS)


@pytest.mark.skipif(not BBH_DATA.is_dir(), reason=f"BBH data not found at {BBH_DATA}")
@pytest.mark.parametrize("subtask", BBH_SUBTASKS)
def test_bbh_table_matches_every_target_in_the_data(subtask: str) -> None:
    """Every target has its subtask's form, flexible extraction keeps it unchanged, and finds it in
    the CoT exemplars' ending "So the answer is X."."""
    examples = json.loads((BBH_DATA / f"{subtask}.json").read_text(encoding="utf-8"))["examples"]
    answer_format = bbh_answer_format(subtask)
    nonconforming = set()
    for example in examples:
        target = example["target"]
        if not matches_format(target, answer_format):
            nonconforming.add((subtask, target))
            continue
        assert extract_flexible(target, answer_format) == target
        assert (
            extract_flexible(f"Let's think step by step.\nSo the answer is {target}.", answer_format)
            == target
        )
    assert nonconforming == {pair for pair in BBH_NONCONFORMING_TARGETS if pair[0] == subtask}


@pytest.mark.parametrize("subtask", BBH_SUBTASKS)
def test_lm_evals_cot_exemplars_end_in_the_tables_form(subtask: str) -> None:
    """lm-eval's own few-shot CoT exemplars: strict get-answer and flexible agree on an answer
    in the table's form (needs no data: the exemplars are in lm-eval's YAML)."""
    config = load_lmeval_yaml(f"bbh/cot_fewshot/{subtask}.yaml")
    template = load_lmeval_yaml("bbh/cot_fewshot/_cot_fewshot_template_yaml")
    answer_format = bbh_answer_format(subtask)
    exemplars = [sample["target"] for sample in config["fewshot_config"]["samples"]]
    assert len(exemplars) == 3
    got = run_filters(template["filter_list"] + [flexible_pipeline(answer_format)], exemplars)
    for strict, flexible in zip(got["get-answer"], got["flexible-extract"], strict=True):
        assert matches_format(strict, answer_format), strict
        assert flexible == strict


@pytest.mark.skipif(not GSM8K_DATA.is_dir(), reason=f"GSM8K data not found at {GSM8K_DATA}")
def test_number_format_matches_every_gsm8k_answer() -> None:
    for split in ("train", "test"):
        lines = (GSM8K_DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        for line in lines:
            target = json.loads(line)["answer"].split("####")[-1].strip()
            assert matches_format(target, "number"), target
            assert extract_flexible(f"The answer is {target}.", "number") == target.replace(",", "")


# --- extract_flexible, format by format -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So the answer is (B).", "(B)"),
        ("The answer is (B).", "(B)"),
        ("the answer is B.", "(B)"),
        ("Answer: (b)", "(B)"),
        ("answer: c", "(C)"),
        ("B) is the only option left.", "(B)"),
        (" (A)", "(A)"),  # a direct (answer-only) reply
        ("(A) is tempting, but (C) fits the dates. So the answer is (D).", "(D)"),
        ("So the answer is (A). Actually, the answer is (C).", "(C)"),  # two candidates: the last
        ("So the answer is (Q).", "(Q)"),  # reasoning_about_colored_objects goes up to (R)
        ("the answer is a bit unclear", INVALID),  # the article "a" is not an option
        ("I cannot tell.", INVALID),
        ("", INVALID),
    ],
)
def test_multiple_choice(text: str, expected: str) -> None:
    assert extract_flexible(text, "multiple_choice") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 18.", "18"),
        ("The answer is 1,000.", "1000"),
        ("The answer is $18.", "18"),
        ("The answer is $18.00", "18"),
        ("The answer is 2.50.", "2.5"),
        ("5 - 8 = -3. So the answer is -3.", "-3"),
        ("The answer is 18. Then 2 more make 20.", "20"),  # the last number, by definition
        ("5-3=2", "2"),  # a hyphen between numbers is not a sign
        ("1,2,3", "3"),  # not thousands groups: three numbers
        ("The answer is -0.", "0"),
        ("#### 72", "72"),
        ("no numbers here", INVALID),
    ],
)
def test_numbers(text: str, expected: str) -> None:
    assert extract_flexible(text, "number") == expected
    assert extract_flexible(text, "integer") == expected


@pytest.mark.parametrize(
    ("text", "answer_format", "expected"),
    [
        ("not True is False. So the answer is False.", "true_false", "False"),
        ("the answer is true", "true_false", "True"),
        ("So the answer is Yes.", "yes_no", "Yes"),
        ("so the answer is yes", "yes_no", "Yes"),
        ("So the answer is Yes.", "yes_no_lower", "yes"),
        ("No, ... So the answer is no.", "yes_no_lower", "no"),
        ("The argument is not valid, so the answer is invalid.", "valid_invalid", "invalid"),
        ("So the answer is valid.", "valid_invalid", "valid"),
        ("Invalid", "valid_invalid", "invalid"),
        ("nothing", "yes_no", INVALID),
        ("Yesterday and nowhere", "yes_no", INVALID),  # whole words only
    ],
)
def test_closed_word_sets(text: str, answer_format: str, expected: str) -> None:
    assert extract_flexible(text, answer_format) == expected


@pytest.mark.parametrize(
    ("text", "answer_format", "expected"),
    [
        ("We need } and ]. So the answer is ] ) }.", "dyck", "] ) }"),
        ("So the answer is ])}", "dyck", "] ) }"),
        (" ] ) }", "dyck", "] ) }"),  # direct reply
        ("So the answer is:\n] >", "dyck", "] >"),  # empty after the cue: the last line
        ("So the answer is arson aspect census.", "word_list", "arson aspect census"),
        ("The answer is: Arson, aspect, census", "word_list", "arson aspect census"),
        ("So the answer is \"can't o'connor r&d\".", "word_list", "can't o'connor r&d"),
        ("Sorted:\napple banana\n", "word_list", "apple banana"),
        ("First line.\nSecond line.", "free_text", "Second line"),
        ("So the answer is **Paris**.", "free_text", "Paris"),
        ("   \n  ", "free_text", INVALID),
    ],
)
def test_free_text(text: str, answer_format: str, expected: str) -> None:
    assert extract_flexible(text, answer_format) == expected


def test_unknown_answer_format_is_a_harness_error() -> None:
    with pytest.raises(HarnessError, match="unknown answer_format 'letters'.*multiple_choice"):
        extract_flexible("(A)", "letters")


# --- the lm-eval filter -------------------------------------------------------------------------


def test_filter_is_registered_and_reimport_is_harmless() -> None:
    from lm_eval.api.registry import get_filter

    importlib.reload(extract)  # a second module execution must not raise
    import harness.suites.extract  # noqa: F401

    filter_class = get_filter(FILTER_NAME)
    assert filter_class.__module__ == "harness.suites.extract"
    assert filter_class(answer_format="yes_no").apply([["So the answer is no.", "Yes"]], [{}]) == [
        ["No", "Yes"]
    ]


def test_filter_rejects_bad_kwargs() -> None:
    from lm_eval.api.registry import get_filter

    with pytest.raises(HarnessError, match="unknown answer_format"):
        get_filter(FILTER_NAME)(answer_format="letter")
    with pytest.raises(HarnessError, match="takes only answer_format"):
        get_filter(FILTER_NAME)(answer_format="number", regex_pattern="x")


# --- GSM8K through lm-eval's real task pipeline --------------------------------------------------

# (response, gold after "####", strict-match, lm-eval's flexible-extract, ours): exact_match scores
GSM8K_CASES: list[tuple[str, str, float, float, float]] = [
    ("6 + 12 = 18. The answer is 18.", "18", 1, 1, 1),
    ("The answer is 1,000.", "1000", 1, 1, 1),  # the metric ignores commas
    ("The answer is 2125.", "2,125", 1, 1, 1),  # gold written with a comma in the data
    ("The answer is 18 apples.", "18", 1, 1, 1),
    ("The answer is 50%.", "50", 1, 1, 1),
    ("He loses 5. The answer is -3.", "-3", 1, 1, 1),
    ("#### 18", "18", 0, 1, 1),  # GSM8K's own answer format is not the CoT exemplars'
    # strict's pattern has no "$": "[invalid]"; lm-eval's flexible keeps "$18." and the metric
    # removes "$" and the final period.
    ("The answer is $18.", "18", 0, 1, 1),
    # Surprising (lm-eval): "18.00" is not "18" for exact_match; only a final period is ignored.
    ("The answer is $18.00", "18", 0, 0, 1),
    ("The answer is 18.00.", "18", 0, 0, 1),
    # Surprising (lm-eval): strict's "The answer is (N)." needs one more character after N, so a
    # reply ending right after the number loses its last digit ("1").
    ("The answer is 18", "18", 0, 1, 1),
    # Case-sensitive: strict wants "The answer is".
    ("So the answer is 18.", "18", 0, 1, 1),
    # Several numbers: strict takes "The answer is" N, both flexible filters the last number.
    ("The answer is 18. Then 2 more make 20.", "18", 1, 0, 0),
    # Surprising (lm-eval): its flexible regex (-?[$0-9.,]{2,}) matches the ellipsis "...".
    ("The answer is 5. Let me double check...", "5", 1, 0, 1),
    ("The answer is 5.5.", "5", 0, 0, 0),  # decimals stay decimals
    ("I do not know.", "18", 0, 0, 0),  # nothing found: "[invalid]"
]
GSM8K_FILTERED: dict[str, tuple[str, str, str]] = {  # what each pipeline extracted
    "The answer is $18.00": (INVALID, "$18.00", "18"),
    "The answer is 18": ("1", "18", "18"),
    "The answer is 5. Let me double check...": ("5.", "...", "5"),
    # strict's [0-9.,]+ takes the period too; the metric's regexes_to_ignore drop a final one
    "The answer is 18. Then 2 more make 20.": ("18.", "20.", "20"),
    "I do not know.": (INVALID, INVALID, INVALID),
}


@pytest.fixture(scope="module")
def gsm8k_scores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """lm-eval's installed gsm8k-cot.yaml as a ConfigurableTask over a tiny local dataset, with our
    filter added as a third pipeline; apply_filters + process_results score each response."""
    from lm_eval.api.task import ConfigurableTask

    data = tmp_path_factory.mktemp("gsm8k") / "test.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"Question {i}?", "answer": f"Some work.\n#### {gold}"}) + "\n"
            for i, (_, gold, *_) in enumerate(GSM8K_CASES)
        ),
        encoding="utf-8",
    )
    config = load_lmeval_yaml("gsm8k/gsm8k-cot.yaml")
    assert [p["name"] for p in config["filter_list"]] == ["strict-match", "flexible-extract"]
    config["filter_list"][1]["name"] = "lmeval-flexible"
    config["filter_list"].append(flexible_pipeline("number"))
    config.pop("tag", None)
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {"test": str(data)}},
        num_fewshot=0,
    )
    task = ConfigurableTask(config=config)
    task.build_all_requests(limit=None)
    instances = sorted(task.instances, key=lambda inst: inst.doc_id)
    assert len(instances) == len(GSM8K_CASES)
    for instance, (response, *_) in zip(instances, GSM8K_CASES, strict=True):
        instance.resps = [response]
    task.apply_filters()
    scores = {}
    for instance, (response, *_) in zip(instances, GSM8K_CASES, strict=True):
        scores[response] = {
            name: (value, task.process_results(instance.doc, [value])["exact_match"])
            for name, value in instance.filtered_resps.items()
        }
    return scores


@pytest.mark.parametrize(("response", "gold", "strict", "lmeval_flexible", "ours"), GSM8K_CASES)
def test_gsm8k_real_pipeline(
    gsm8k_scores: dict[str, dict[str, Any]],
    response: str,
    gold: str,
    strict: float,
    lmeval_flexible: float,
    ours: float,
) -> None:
    got = gsm8k_scores[response]
    assert {name: score for name, (_, score) in got.items()} == {
        "strict-match": strict,
        "lmeval-flexible": lmeval_flexible,
        "flexible-extract": ours,
    }
    if response in GSM8K_FILTERED:
        assert (
            tuple(got[name][0] for name in ("strict-match", "lmeval-flexible", "flexible-extract"))
            == (GSM8K_FILTERED[response])
        )


# --- BBH: lm-eval's strict get-answer vs our flexible filter --------------------------------------

# (subtask, response, gold, strict get-answer output, flexible output): exact_match is 1 iff equal to gold
BBH_COT_CASES: list[tuple[str, str, str, str, str]] = [
    ("date_understanding", "So the answer is (B).", "(B)", "(B)", "(B)"),
    # Surprising (lm-eval): the lookbehind is case-sensitive, "The answer is" finds nothing.
    ("date_understanding", "The answer is (B).", "(B)", INVALID, "(B)"),
    ("date_understanding", "So the answer is B.", "(B)", "B", "(B)"),
    ("date_understanding", "So the answer is (B)", "(B)", "(B", "(B)"),  # no final period: loses ")"
    ("date_understanding", "Neither date fits.", "(B)", INVALID, INVALID),
    # Two candidates: strict keeps the rest of the line after the first cue; flexible the last.
    (
        "date_understanding",
        "So the answer is (A). Actually, the answer is (C).",
        "(C)",
        "(A). Actually, the answer is (C)",
        "(C)",
    ),
    ("object_counting", "1 + 2 + 1,000 = 1,003. So the answer is 1,003.", "1003", "1,003", "1003"),
    ("multistep_arithmetic_two", "(-5 + 2) = -3. So the answer is -3.", "-3", "-3", "-3"),
    ("boolean_expressions", "not False = True. So the answer is True.", "True", "True", "True"),
    ("boolean_expressions", "So the answer is false.", "False", "false", "False"),
    ("formal_fallacies", "So the answer is valid.", "valid", "valid", "valid"),
    ("formal_fallacies", "So the answer is: invalid", "invalid", INVALID, "invalid"),  # "is:" is not "is "
    ("causal_judgement", "So the answer is Yes.", "Yes", "Yes", "Yes"),
    ("sports_understanding", "So the answer is Yes.", "yes", "Yes", "yes"),  # casing differs per subtask
    ("dyck_languages", "So the answer is ] ) }.", "] ) }", "] ) }", "] ) }"),
    ("dyck_languages", "So the answer is ])}.", "] ) }", "])}", "] ) }"),
    (
        "word_sorting",
        "So the answer is arson aspect census.",
        "arson aspect census",
        "arson aspect census",
        "arson aspect census",
    ),
    (
        "word_sorting",
        "So the answer is arson, aspect, census.",
        "arson aspect census",
        "arson, aspect, census",
        "arson aspect census",
    ),
]


@pytest.mark.parametrize(("subtask", "response", "gold", "strict", "flexible"), BBH_COT_CASES)
def test_bbh_cot_strict_and_flexible(
    subtask: str, response: str, gold: str, strict: str, flexible: str
) -> None:
    template = load_lmeval_yaml("bbh/cot_fewshot/_cot_fewshot_template_yaml")
    assert template["filter_list"][0]["filter"][0]["regex_pattern"] == "(?<=the answer is )(.*)(?=.)"
    metric_kwargs = {
        k: v
        for k, v in template["metric_list"][0].items()
        if k not in ("metric", "aggregation", "higher_is_better")
    }
    assert matches_format(gold, bbh_answer_format(subtask))
    got = run_filters(template["filter_list"] + [flexible_pipeline(bbh_answer_format(subtask))], [response])
    assert got == {"get-answer": [strict], "flexible-extract": [flexible]}
    assert lm_eval_exact_match(strict, gold, **metric_kwargs) == float(strict == gold)
    assert lm_eval_exact_match(flexible, gold, **metric_kwargs) == float(flexible == gold)


@pytest.mark.parametrize(
    ("subtask", "response", "gold", "flexible"),
    [
        ("snarks", " (A)", "(A)", "(A)"),
        ("navigate", " No", "No", "No"),
        ("object_counting", " 12", "12", "12"),
        ("dyck_languages", " ] ] >", "] ] >", "] ] >"),
        ("sports_understanding", " yes", "yes", "yes"),
        ("snarks", "(A)", "(A)", "(A)"),
    ],
)
def test_bbh_direct_raw_output_vs_flexible(subtask: str, response: str, gold: str, flexible: str) -> None:
    """Answer-only BBH has no filter in lm-eval: the raw reply is compared. Surprising (lm-eval):
    after the prompt's "A:" a model replies " (A)" with a space, and exact_match (no options in the
    fewshot template) counts that wrong; the flexible filter strips it."""
    template = load_lmeval_yaml("bbh/fewshot/_fewshot_template_yaml")
    assert "filter_list" not in template
    got = run_filters([flexible_pipeline(bbh_answer_format(subtask))], [response])
    assert got == {"flexible-extract": [flexible]}
    assert lm_eval_exact_match(response, gold) == float(response == gold)
    assert lm_eval_exact_match(flexible, gold) == 1.0


@pytest.mark.skipif(not BBH_DATA.is_dir(), reason=f"BBH data not found at {BBH_DATA}")
@pytest.mark.parametrize("subtask", ["sports_understanding", "word_sorting"])
def test_bbh_cot_task_config_with_both_pipelines(subtask: str, tmp_path: Path) -> None:
    """lm-eval's installed cot_fewshot YAML as a ConfigurableTask over local data, with the
    filter_list the suites use: filter kwargs reach our filter through the task config."""
    from lm_eval.api.task import ConfigurableTask

    examples = json.loads((BBH_DATA / f"{subtask}.json").read_text(encoding="utf-8"))["examples"][:3]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(example) + "\n" for example in examples), encoding="utf-8")
    config = load_lmeval_yaml(f"bbh/cot_fewshot/{subtask}.yaml")
    template = load_lmeval_yaml("bbh/cot_fewshot/_cot_fewshot_template_yaml")
    strict = dict(template["filter_list"][0], name="strict-match")
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {"test": str(data)}},
        filter_list=[strict, flexible_pipeline(bbh_answer_format(subtask))],
    )
    config.pop("include", None)
    task = ConfigurableTask(config=config)
    task.build_all_requests(limit=None)
    instances = sorted(task.instances, key=lambda inst: inst.doc_id)
    # Right in the exemplars' form, right but capitalised, wrong.
    targets = [example["target"] for example in examples]
    responses = [
        f"So the answer is {targets[0]}.",
        f"So the answer is {targets[1].capitalize()}",
        "So the answer is zzz.",
    ]
    for instance, response in zip(instances, responses, strict=True):
        instance.resps = [response]
    task.apply_filters()
    scores = [
        {
            name: task.process_results(inst.doc, [value])["exact_match"]
            for name, value in inst.filtered_resps.items()
        }
        for inst in instances
    ]
    assert scores == [
        {"strict-match": 1.0, "flexible-extract": 1.0},
        {"strict-match": 0.0, "flexible-extract": 1.0},
        {"strict-match": 0.0, "flexible-extract": 0.0},
    ]
