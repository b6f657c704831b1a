"""The public-benchmark suites (GSM8K CoT, BBH, IFEval) on local data, `lm-eval:TASK` by name,
ICL draws, and the bad-input errors of suite loading. Skipped where ../shared/data is absent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.aggregate import summarize_suites
from harness.errors import HarnessError
from harness.suites import load_suites
from harness.suites.base import ItemResult, Response
from harness.suites.suite import LmEvalSuite

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "bbh").is_dir(), reason=f"public benchmark data not at {DATA}")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def gsm8k() -> LmEvalSuite:
    if not (DATA / "gsm8k").is_dir():
        pytest.skip(f"GSM8K data not at {DATA}")
    return load_suites("gsm8k-cot", limit=4, data_dir=DATA)[0]


@pytest.fixture(scope="module")
def bbh_two() -> list[LmEvalSuite]:
    if not (DATA / "bbh").is_dir():
        pytest.skip(f"BBH data not at {DATA}")
    return load_suites("bbh:date_understanding+navigate", limit=3, data_dir=DATA)


def _cot_prompt_file(subtask: str) -> str:
    """The official BBH CoT prompt (Suzgun et al.): canary line, '-----', description, 3 examples."""
    text = (DATA / "bbh" / "cot-prompts" / f"{subtask}.txt").read_text(encoding="utf-8")
    return text.split("-----\n", 1)[1]


# -- GSM8K -----------------------------------------------------------------------------------------
def test_gsm8k_uses_the_test_split_and_eight_cot_exemplars(gsm8k: LmEvalSuite) -> None:
    info = gsm8k.info()
    assert info.variants == ("cot", "direct") and info.n_items == 4
    first = json.loads((DATA / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    items = gsm8k.items()
    cot = next(i for i in items if i.variant == "cot")
    direct = next(i for i in items if i.variant == "direct")
    assert cot.doc["question"] == first["question"] and cot.item_id == direct.item_id
    prompt, direct_prompt = cot.requests[0].prompt, direct.requests[0].prompt
    assert prompt.count("Q: ") == 9 and prompt.endswith(f"Q: {first['question']}\nA:")
    assert "There are 15 trees originally." in prompt
    # the direct baseline: the same eight exemplar questions, answer-only targets
    assert direct_prompt.count("Q: ") == 9 and "There are 15 trees originally." not in direct_prompt
    assert re.findall(r"Q: (.*)\n", prompt) == re.findall(r"Q: (.*)\n", direct_prompt)
    assert "A: The answer is 6.\n\n" in direct_prompt
    params = cot.requests[0].params
    assert (
        params is not None and params.max_tokens == 256 and "Q:" in params.stop
    )  # lm-eval's budget and stops


def test_gsm8k_scores_strict_and_flexible(gsm8k: LmEvalSuite) -> None:
    gold = {i.item_id: i.doc["answer"].split("####")[-1].strip() for i in gsm8k.items()}
    items = gsm8k.items()
    ids = sorted(gold)
    texts = {
        ids[0]: f"Some steps. The answer is {gold[ids[0]]}.",  # both right
        ids[1]: f"So she makes {gold[ids[1]]} dollars.",  # flexible only
        ids[2]: "The answer is 123456789.",  # both wrong
        ids[3]: "I do not know",  # nothing to extract
    }
    responses = {r: Response(text=texts[i.item_id], finish_reason="stop") for i in items for r in i.requests}
    results = {(r.variant, r.item_id): r for r in gsm8k.score("m", responses)}
    got = [
        (
            results[("cot", i)].metrics["exact_match,strict-match"],
            results[("cot", i)].metrics["exact_match,flexible-extract"],
        )
        for i in ids
    ]
    assert got == [(1.0, 1.0), (0.0, 1.0), (0.0, 0.0), (0.0, 0.0)]
    assert results[("cot", ids[3])].extracted is None
    assert results[("cot", ids[0])].score == 1.0  # primary: strict-match, as lm-eval reports


# -- BBH -------------------------------------------------------------------------------------------
@needs_data
def test_bbh_prompts_equal_the_official_cot_prompts(bbh_two: list[LmEvalSuite]) -> None:
    for suite in bbh_two:
        assert suite.subtask is not None
        official = _cot_prompt_file(suite.subtask)
        cot = next(i for i in suite.items() if i.variant == "cot")
        prompt = cot.requests[0].prompt
        expected_tail = f"Q: {cot.doc['input']}\nA: Let's think step by step.\n"
        assert prompt == official.rstrip("\n") + "\n\n" + expected_tail


@needs_data
def test_bbh_selects_subtasks_and_groups_them(bbh_two: list[LmEvalSuite]) -> None:
    infos = [s.info() for s in bbh_two]
    assert [i.name for i in infos] == ["bbh:date_understanding", "bbh:navigate"]
    assert all(i.group == "bbh" and i.variants == ("cot", "direct") for i in infos)
    assert infos[1].chance == 0.5 and 0.15 < infos[0].chance < 0.2
    results: list[ItemResult] = []
    for suite in bbh_two:
        items = suite.items()
        responses = {}
        for item in items:
            answer = item.doc["target"] if item.item_id == "0" else "(Z)"
            text = f"Reasoning. So the answer is {answer}." if item.variant == "cot" else f" {answer}"
            responses.update({r: Response(text=text, finish_reason="stop") for r in item.requests})
        results += suite.score("t", responses) + suite.score("s", responses)
    summary = summarize_suites(bbh_two, results, {"t": "teacher", "s": "student"}, seed=0, n_boot=50)
    group = summary["bbh"]
    assert group["members"] == ["bbh:date_understanding", "bbh:navigate"] and group["n_items"] == 6
    cot_t = group["variants"]["cot"]["t"]
    assert cot_t["n"] == 6 and cot_t["score"] == pytest.approx(2 / 6)
    # direct: lm-eval's strict match compares the raw reply, so " (B)" is wrong; flexible finds it
    direct_t = group["variants"]["direct"]["t"]
    assert direct_t["exact_match,strict-match"] == 0.0
    assert direct_t["exact_match,flexible-extract"] == pytest.approx(2 / 6)
    assert summary["bbh:navigate"]["gain"]["t"]["cot"]["value"] == pytest.approx(1 / 3)


@needs_data
def test_unknown_subtask_lists_the_valid_ones() -> None:
    with pytest.raises(HarnessError, match=r"no subtask 'navigat'; valid subtasks: boolean_expressions, "):
        load_suites("bbh:navigat", limit=1, data_dir=DATA)


def test_missing_data_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(HarnessError) as err:
        load_suites("gsm8k-cot", limit=1, data_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "gsm8k" / "test.jsonl") in message
    assert "--data-dir" in message
    with pytest.raises(HarnessError, match=r"no --data-dir was given .* pass --data-dir DIR holding ifeval/"):
        load_suites("ifeval", limit=1)
    with pytest.raises(HarnessError, match=r"data folder .*nowhere does not exist"):
        load_suites("ifeval", limit=1, data_dir=tmp_path / "nowhere")


# -- IFEval ----------------------------------------------------------------------------------------
@needs_data
def test_ifeval_reads_all_541_prompts_and_25_types() -> None:
    suite = load_suites("ifeval", limit=None, data_dir=DATA)[0]
    items = suite.items()
    assert len(items) == 541 and suite.info().n_items == 541
    kinds = {k for item in items for k in item.doc["instruction_id_list"]}
    assert len(kinds) == 25
    params = items[0].requests[0].params
    assert params is not None and params.max_tokens == 1280  # lm-eval's budget for ifeval


@needs_data
def test_ifeval_breaks_down_by_instruction_type() -> None:
    suite = load_suites("ifeval", limit=20, data_dir=DATA)[0]
    items = suite.items()
    responses = {r: Response(text="hello world", finish_reason="stop") for i in items for r in i.requests}
    results = suite.score("t", responses) + suite.score("s", responses)
    summary = summarize_suites([suite], results, {"t": "teacher", "s": "student"}, seed=0, n_boot=20)
    types = summary["ifeval"]["instruction_types"]
    pooled = sum(len(i.doc["instruction_id_list"]) for i in items)
    assert sum(entry["t"]["n"] for entry in types.values()) == pooled
    no_comma = types["punctuation:no_comma"]["t"]
    assert no_comma["strict"] == 1.0 and no_comma["loose"] == 1.0  # "hello world" has no comma
    lm_eval_inst = summary["ifeval"]["variants"]["default"]["t"]["lm_eval"]["inst_level_strict_acc,none"]
    passed = sum(entry["t"]["strict"] * entry["t"]["n"] for entry in types.values())
    assert lm_eval_inst == pytest.approx(passed / pooled)


# -- lm-eval tasks by name, ICL draws and pools ------------------------------------------------------
def test_lm_eval_task_by_name_runs_as_an_icl_sweep() -> None:
    if not (DATA / "gsm8k").is_dir():
        pytest.skip(f"GSM8K data not at {DATA}")
    suite = load_suites("lm-eval:gsm8k", limit=2, data_dir=DATA, shots=[0, 2], draws=2)[0]
    info = suite.info()
    assert info.name == "lm-eval:gsm8k" and info.ability == "icl"
    assert info.variants == ("k=0", "k=2") and info.draws == {"k=2": ("k=2/d1",)}
    prompts = {i.variant: i.requests[0].prompt for i in suite.items() if i.item_id == "0"}
    assert prompts["k=0"].count("Question:") == 1 and prompts["k=2"].count("Question:") == 3
    assert prompts["k=2"] != prompts["k=2/d1"]  # another seeded draw of the examples


def test_unknown_lm_eval_task_is_a_one_line_error() -> None:
    with pytest.raises(HarnessError, match=r"lm-eval has no task named 'no_such_task_xyz'"):
        load_suites("lm-eval:no_such_task_xyz", limit=1)


def test_more_shots_than_the_pool_is_refused() -> None:
    if not (DATA / "gsm8k").is_dir():
        pytest.skip(f"GSM8K data not at {DATA}")
    with pytest.raises(HarnessError, match=r"k=9 needs 9 few-shot examples but the task's pool holds 8"):
        load_suites("lm-eval:gsm8k_cot", limit=1, data_dir=DATA, shots=[0, 9])


@needs_data
def test_all_27_bbh_subtasks_load_build_and_score() -> None:
    """Every subtask: lm-eval's CoT and answer-only tasks on the local data, both extractions, a chance."""
    from harness.suites.extract import BBH_SUBTASKS

    suites = load_suites("bbh", limit=1, data_dir=DATA)
    assert [s.subtask for s in suites] == list(BBH_SUBTASKS) and len(suites) == 27
    for suite in suites:
        items = suite.items()
        assert {i.variant for i in items} == {"cot", "direct"}
        target = items[0].doc["target"]
        responses = {
            r: Response(
                text=f"So the answer is {target}." if i.variant == "cot" else target, finish_reason="stop"
            )
            for i in items
            for r in i.requests
        }
        for result in suite.score("m", responses):
            assert result.metrics["exact_match,flexible-extract"] == 1.0, (suite.name, result.variant)
            assert result.metrics["exact_match,strict-match"] == 1.0, (suite.name, result.variant)


@needs_data
def test_lm_eval_task_without_its_own_examples_sweeps_zero_shot_only() -> None:
    """ifeval has only its test split: lm-eval would draw examples from the test items themselves."""
    suite = load_suites("lm-eval:ifeval", limit=2, data_dir=DATA, shots=[0, 8])[0]
    assert suite.info().variants == ("k=0",) and len(suite.items()) == 2
