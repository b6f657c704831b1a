"""`harness score`: saved responses in each format re-scored without a model.

Expected values come from the benchmarks' definitions (IFEval's strict/loose rules, the GSM8K and BBH
answer regexes), worked out by hand per response. Files of real GSM8K/BBH/IFEval items are written
at test time from the local data folder (never copied into the repo); those tests skip without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.rescore import format_summary, score_responses
from tests.unit.test_suites import MC_TASK

CASES = Path(__file__).parent / "cases" / "rescore"
DATA = Path(__file__).parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data not found at {DATA}")
DATE = "2025-01-02T03-04-05.678901"  # lm-eval's samples_<task>_<date>.jsonl stamp


@pytest.fixture(autouse=True, scope="module")
def offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("HARNESS_DATA_DIR", raising=False)
        yield


def row(metrics: dict[str, Any], suite: str, variant: str, model: str) -> dict[str, Any]:
    return metrics["suites"][suite]["variants"][variant][model]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_items(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- IFEval input_response_data ----------------------------------------------------------------------


def test_ifeval_responses_on_if_basic_give_ifevals_four_accuracies(tmp_path: Path) -> None:
    # 1002 title: "<<Moon>>" -> passes.  1003 forbidden "pool" + title: strict fails "pool"; loose passes
    # (the variant without the last line, "<<Swimming>>", has no "pool").  1005 keyword "street": absent
    # in every variant.  1006 no comma: one line with a comma, every loose variant empty or with it.
    # 1008 ends with "Have a nice day." -> passes.  6 instructions in all.
    metrics = score_responses(
        "if-basic", CASES / "if_basic_responses.jsonl", data_dir=None, out_dir=tmp_path, bootstrap=200
    )
    cell = row(metrics, "if-basic", "default", "if_basic_responses")
    assert cell["n"] == 5
    assert cell["score"] == pytest.approx(2 / 5)
    assert cell["lm_eval"] == pytest.approx(
        {
            "prompt_level_strict_acc,none": 2 / 5,
            "inst_level_strict_acc,none": 3 / 6,
            "prompt_level_loose_acc,none": 3 / 5,
            "inst_level_loose_acc,none": 4 / 6,
        }
    )
    items = {r["item_id"]: r for r in read_items(tmp_path / "items.jsonl")}
    assert {k: r["score"] for k, r in items.items()} == {
        "1002": 1.0,
        "1003": 0.0,
        "1005": 0.0,
        "1006": 0.0,
        "1008": 1.0,
    }
    assert items["1003"]["details"]["instructions"] == [
        {"id": "keywords:forbidden_words", "strict": False, "loose": True},
        {"id": "detectable_format:title", "strict": True, "loose": True},
    ]
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert metrics["rescore"]["format"] == "ifeval-responses"
    assert any("5 of 32" in note for note in metrics["notes"])


IFEVAL_RESPONSES = {  # key -> response, with IFEval's verdicts worked out by hand
    1001: "Day one: Tokyo. Day two: Kyoto.",  # no_comma: pass
    1019: "what are the boys playing with?",  # english_lowercase: pass
    1051: "Dear Friend, please vote.",  # english_lowercase: fail, strict and loose (one line)
    1092: "Japan was lovely.",  # number_words < 300: pass
    # no_comma + two_responses: the comma fails strict; loose drops the first line, leaving no comma,
    # and two_responses passes on the whole text
    1107: "Why did the rocket leave? It was bored, so it flew.\n******\nRockets never get lonely.",
}


def ifeval_docs() -> dict[int, dict[str, Any]]:
    lines = (DATA / "ifeval" / "input_data.jsonl").read_text(encoding="utf-8").splitlines()
    docs = {int(d["key"]): d for d in map(json.loads, lines)}
    return {k: docs[k] for k in IFEVAL_RESPONSES}


IFEVAL_EXPECTED = {
    "prompt_level_strict_acc,none": 3 / 5,
    "inst_level_strict_acc,none": 4 / 6,
    "prompt_level_loose_acc,none": 4 / 5,
    "inst_level_loose_acc,none": 5 / 6,
}


@needs_data
def test_ifeval_input_response_data_on_ifeval(tmp_path: Path) -> None:
    docs = ifeval_docs()
    path = write_jsonl(
        tmp_path / "responses.jsonl",
        [{"prompt": docs[k]["prompt"], "response": text} for k, text in IFEVAL_RESPONSES.items()],
    )
    metrics = score_responses("ifeval", path, data_dir=DATA, out_dir=None, model="m", bootstrap=200)
    cell = row(metrics, "ifeval", "default", "m")
    assert cell["n"] == 5 and cell["score"] == pytest.approx(3 / 5)
    assert cell["lm_eval"] == pytest.approx(IFEVAL_EXPECTED)


@needs_data
def test_lm_eval_samples_folder_on_ifeval_agrees_with_logged_metrics(tmp_path: Path) -> None:
    verdicts = {  # key -> (strict per instruction, loose per instruction)
        1001: ([True], [True]),
        1019: ([True], [True]),
        1051: ([False], [False]),
        1092: ([True], [True]),
        1107: ([False, True], [True, True]),
    }
    lines = []
    for doc_id, (key, doc) in enumerate(ifeval_docs().items()):
        strict, loose = verdicts[key]
        lines.append(
            {
                "doc_id": doc_id,
                "doc": doc,
                "target": "0",
                "arguments": {"gen_args_0": {"arg_0": doc["prompt"], "arg_1": {"until": []}}},
                "resps": [[IFEVAL_RESPONSES[key]]],
                "filtered_resps": [IFEVAL_RESPONSES[key]],
                "filter": "none",
                "metrics": [
                    "prompt_level_strict_acc",
                    "inst_level_strict_acc",
                    "prompt_level_loose_acc",
                    "inst_level_loose_acc",
                ],
                "prompt_level_strict_acc": all(strict),
                "inst_level_strict_acc": strict,
                "prompt_level_loose_acc": all(loose),
                "inst_level_loose_acc": loose,
            }
        )
    write_jsonl(tmp_path / "out" / "org__model" / f"samples_ifeval_{DATE}.jsonl", lines)
    metrics = score_responses("ifeval", tmp_path / "out", data_dir=DATA, out_dir=None, bootstrap=200)
    assert row(metrics, "ifeval", "default", "org__model")["lm_eval"] == pytest.approx(IFEVAL_EXPECTED)
    agreement = metrics["rescore"]["lm_eval_agreement"]["ifeval"]["default"]
    assert set(agreement) == set(IFEVAL_EXPECTED)
    assert all(cell["n"] == 5 and cell["agree"] == 5 for cell in agreement.values())


# -- lm-eval --log_samples -----------------------------------------------------------------------------


def test_lm_eval_samples_on_cot_basic(tmp_path: Path) -> None:
    # "... The answer is 6." right both ways; "10 - 2 = 8" (no "The answer is") flexible only; "The
    # answer is 12." for 16 wrong both ways. lm-eval logs each doc once per filter: 6 lines, 3 docs.
    metrics = score_responses(
        "cot-basic",
        CASES / f"samples_cot_basic_cot_{DATE}.jsonl",
        data_dir=None,
        out_dir=tmp_path,
        bootstrap=200,
    )
    assert list(metrics["suites"]["cot-basic"]["variants"]) == ["cot"]
    cell = row(metrics, "cot-basic", "cot", "rescore")  # the samples' folder names the model, as in lm-eval
    assert cell["n"] == 3
    assert cell["exact_match,strict-match"] == pytest.approx(1 / 3)
    assert cell["exact_match,flexible-extract"] == pytest.approx(2 / 3)
    assert cell["score"] == pytest.approx(2 / 3)  # cot-basic's primary metric is the flexible one
    # what the flexible regex extracts; exact_match then drops the trailing period
    assert [r["extracted"] for r in read_items(tmp_path / "items.jsonl")] == ["6.", "8", "12."]
    agreement = metrics["rescore"]["lm_eval_agreement"]["cot-basic"]["cot"]
    assert {k: (c["n"], c["agree"]) for k, c in agreement.items()} == {
        "exact_match,strict-match": (3, 3),
        "exact_match,flexible-extract": (3, 3),
    }


def test_a_samples_folder_written_by_lm_eval_re_scores_to_lm_evals_numbers(tmp_path: Path) -> None:
    """lm-eval's own evaluator and EvaluationTracker write the folder: the format is lm-eval's."""
    from lm_eval import simple_evaluate
    from lm_eval.api.model import LM
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from harness.suites import load_suites

    class Scripted(LM):
        """Right in the exemplars' shape, right as a bare number, or wrong, by item."""

        def generate_until(self, requests, disable_tqdm: bool = False):  # noqa: ANN001
            gold = [r.doc["answer"] for r in requests]
            shapes = [" So {}. The answer is {}.", " {} and {}", " The answer is 1{}{}."]
            return [shapes[r.doc_id % 3].format(g, g) for r, g in zip(requests, gold, strict=True)]

        def loglikelihood(self, requests, disable_tqdm: bool = False):  # noqa: ANN001
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):  # noqa: ANN001
            raise NotImplementedError

    suite = load_suites("cot-basic", limit=9)[0]
    task = suite.tasks[next(v for v in suite.variants if v.name == "cot").task_key]
    out = simple_evaluate(
        model=Scripted(),
        task_manager=TaskManager(include_defaults=False),
        tasks=[task],
        limit=9,
        fewshot_random_seed=suite.seed,
        bootstrap_iters=0,
        log_samples=True,
    )
    tracker = EvaluationTracker(output_path=str(tmp_path / "lm"))
    tracker.general_config_tracker.model_name_sanitized = "scripted"
    samples = out.pop("samples")
    tracker.save_results_aggregated(results=out, samples=samples)
    tracker.save_results_samples(task_name="cot_basic_cot", samples=samples["cot_basic_cot"])
    theirs = {k: float(v) for k, v in out["results"]["cot_basic_cot"].items() if k.startswith("exact_match,")}
    assert theirs == pytest.approx({"exact_match,strict-match": 3 / 9, "exact_match,flexible-extract": 6 / 9})

    metrics = score_responses("cot-basic", tmp_path / "lm", data_dir=None, out_dir=None, bootstrap=200)
    cell = row(metrics, "cot-basic", "cot", "scripted")
    assert cell["n"] == 9
    assert {k: cell[k] for k in theirs} == pytest.approx(theirs)
    agreement = metrics["rescore"]["lm_eval_agreement"]["cot-basic"]["cot"]
    assert {k: (c["n"], c["agree"]) for k, c in agreement.items()} == {k: (9, 9) for k in theirs}


GSM8K_RESPONSES = [  # (response, strict-match, flexible-extract) for test items 0-3
    (" She sells 16 - 3 - 4 = 9 eggs for $18. The answer is 18.", 1.0, 1.0),
    (" It takes 2 + 1 = 3 bolts", 0.0, 1.0),  # no "The answer is": the last number
    (" The answer is $70,000.", 0.0, 1.0),  # strict wants digits after "is "; flexible drops $ and ,
    (" I am not sure.", 0.0, 0.0),  # no number at all
]


@needs_data
def test_lm_eval_samples_on_gsm8k_cot(tmp_path: Path) -> None:
    lines = (DATA / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    docs = [json.loads(line) for line in lines]
    assert [d["answer"].split("####")[-1].strip() for d in docs] == ["18", "3", "70000", "540"]
    rows = []
    for column, name in ((1, "strict-match"), (2, "flexible-extract")):
        for doc_id, (doc, answer) in enumerate(zip(docs, GSM8K_RESPONSES, strict=True)):
            rows.append(
                {
                    "doc_id": doc_id,
                    "doc": doc,
                    "target": doc["answer"],
                    "arguments": {"gen_args_0": {"arg_0": f"Q: {doc['question']}\nA:", "arg_1": {}}},
                    "resps": [[answer[0]]],
                    "filtered_resps": ["-"],
                    "filter": name,
                    "metrics": ["exact_match"],
                    "exact_match": answer[column],
                }
            )
    path = write_jsonl(tmp_path / f"samples_gsm8k_cot_{DATE}.jsonl", rows)
    metrics = score_responses("gsm8k-cot", path, data_dir=DATA, out_dir=None, model="m", bootstrap=200)
    assert list(metrics["suites"]["gsm8k-cot"]["variants"]) == ["cot"]
    cell = row(metrics, "gsm8k-cot", "cot", "m")
    assert cell["n"] == 4
    assert cell["exact_match,strict-match"] == pytest.approx(1 / 4)
    assert cell["exact_match,flexible-extract"] == pytest.approx(3 / 4)
    agreement = metrics["rescore"]["lm_eval_agreement"]["gsm8k-cot"]["cot"]
    assert all(c["n"] == 4 and c["agree"] == 4 for c in agreement.values()) and len(agreement) == 2


def test_lm_eval_samples_pick_the_variant_whose_prompt_they_ran(tmp_path: Path) -> None:
    """icl-basic's variants share one lm-eval task; the logged prompt says which shot count ran."""
    from harness.suites import load_suites

    suite = load_suites("icl-basic", limit=3)[0]
    items = suite.items(variants={"k=2"})
    rows: list[dict[str, Any]] = [
        {
            "doc_id": i,
            "doc": dict(item.doc),
            "target": str(item.doc["answers"]),
            "arguments": {"gen_args_0": {"arg_0": item.requests[0].prompt, "arg_1": {"until": ["\n"]}}},
            "resps": [[" " + (item.doc["answers"][0] if i < 2 else "banana")]],
        }
        for i, item in enumerate(items)
    ]
    path = write_jsonl(tmp_path / f"samples_icl_basic_antonyms_{DATE}.jsonl", rows)
    metrics = score_responses("icl-basic", path, data_dir=None, out_dir=None, model="m", bootstrap=200)
    assert list(metrics["suites"]["icl-basic"]["variants"]) == ["k=2"]
    assert row(metrics, "icl-basic", "k=2", "m")["score"] == pytest.approx(2 / 3)

    rows[1]["arguments"]["gen_args_0"]["arg_0"] = "hot -> cold\nleft ->"  # a prompt no variant builds
    write_jsonl(path, rows)
    with pytest.raises(HarnessError, match=r"line 2: .*matches none of variants k=0, k=1, k=2"):
        score_responses("icl-basic", path, data_dir=None, out_dir=None)


MC_SUITE = """name: tiny-mc
ability: icl
description: yes or no
chance: 0.5
task: mc.yaml
shots: [0]
chat_template: false
primary_metric: acc,none
"""


def test_multiple_choice_samples_and_run_items_round_trip(tmp_path: Path) -> None:
    (tmp_path / "suite.yaml").write_text(MC_SUITE)
    (tmp_path / "mc.yaml").write_text(MC_TASK)
    docs = [{"q": "a", "label": 0}, {"q": "b", "label": 1}, {"q": "c", "label": 0}]
    write_jsonl(tmp_path / "data.jsonl", docs)
    logprobs = [(-0.1, -2.0), (-0.5, -0.2), (-3.0, -1.0)]  # picks yes, no, no: right, right, wrong
    rows = [
        {
            "doc_id": i,
            "doc": doc,
            "target": str(doc["label"]),
            "arguments": {
                "gen_args_0": {"arg_0": f"{doc['q']} ->", "arg_1": " yes"},
                "gen_args_1": {"arg_0": f"{doc['q']} ->", "arg_1": " no"},
            },
            "resps": [[[str(yes), "False"]], [[str(no), "False"]]],  # as lm-eval writes them: strings
        }
        for i, (doc, (yes, no)) in enumerate(zip(docs, logprobs, strict=True))
    ]
    samples = write_jsonl(tmp_path / "logs" / f"samples_tiny_mc_{DATE}.jsonl", rows)
    suite_file = str(tmp_path / "suite.yaml")
    out = tmp_path / "scored"
    metrics = score_responses(suite_file, samples, data_dir=None, out_dir=out, model="m", bootstrap=200)
    assert row(metrics, "tiny-mc", "k=0", "m")["score"] == pytest.approx(2 / 3)
    first = read_items(out / "items.jsonl")
    assert [r["output"] for r in first] == ["yes", "no", "no"]

    # the items.jsonl just written is a run record's items file: option log-probabilities re-score
    again = score_responses(suite_file, out / "items.jsonl", data_dir=None, out_dir=out / "2", bootstrap=200)
    assert again["suites"] == metrics["suites"]
    assert read_items(out / "2" / "items.jsonl") == first


# -- BBH-style records ---------------------------------------------------------------------------------


def bbh_examples(subtask: str, n: int) -> list[dict[str, str]]:
    text = (DATA / "bbh" / "bbh" / f"{subtask}.json").read_text(encoding="utf-8")
    return json.loads(text)["examples"][:n]


def other_letter(target: str) -> str:
    return "(B)" if target != "(B)" else "(A)"


@needs_data
@pytest.mark.parametrize("as_json_list", [False, True])
def test_bbh_records_with_subtask_and_mode_options(tmp_path: Path, as_json_list: bool) -> None:
    ex = bbh_examples("date_understanding", 3)
    records = [
        {
            "input": ex[0]["input"],
            "prediction": f"So the answer is {ex[0]['target']}.",
            "target": ex[0]["target"],
        },
        {"input": ex[1]["input"], "prediction": f"So the answer is {other_letter(ex[1]['target'])}."},
        # no "the answer is": the strict regex finds nothing, the flexible one finds the letter
        {"input": ex[2]["input"], "prediction": f"The correct option is {ex[2]['target']}."},
    ]
    records[1]["target"] = ex[1]["target"]
    records[2]["target"] = ex[2]["target"]
    path = tmp_path / ("preds.json" if as_json_list else "preds.jsonl")
    if as_json_list:
        path.write_text(json.dumps(records), encoding="utf-8")
    else:
        write_jsonl(path, records)
    metrics = score_responses(
        "bbh", path, data_dir=DATA, out_dir=None, subtask="date_understanding", mode="cot", bootstrap=200
    )
    assert list(metrics["suites"]) == ["bbh", "bbh:date_understanding"]  # the group, over what was scored
    cell = row(metrics, "bbh:date_understanding", "cot", "preds")
    assert cell["n"] == 3
    assert cell["exact_match,strict-match"] == pytest.approx(1 / 3)
    assert cell["exact_match,flexible-extract"] == pytest.approx(2 / 3)


@needs_data
def test_bbh_records_carrying_subtask_and_mode(tmp_path: Path) -> None:
    dates = bbh_examples("date_understanding", 2)
    nav = bbh_examples("navigate", 1)[0]
    records = [
        {"subtask": "date_understanding", "mode": "direct", "input": d["input"], "target": d["target"]}
        for d in dates
    ]
    records[0]["prediction"] = dates[0]["target"]  # answer-only: the raw text is the answer
    records[1]["prediction"] = other_letter(dates[1]["target"])
    # lm-eval's task name says both the subtask and the mode
    records.append(
        {
            "task": "bbh_cot_fewshot_navigate",
            "input": nav["input"],
            "target": nav["target"],
            "prediction": f"Let's think step by step. So the answer is {nav['target']}.",
        }
    )
    path = write_jsonl(tmp_path / "mixed.jsonl", records)
    metrics = score_responses("bbh", path, data_dir=DATA, out_dir=None, bootstrap=200)
    assert sorted(metrics["suites"]) == ["bbh", "bbh:date_understanding", "bbh:navigate"]
    group = metrics["suites"]["bbh"]
    assert group["members"] == ["bbh:date_understanding", "bbh:navigate"]  # only the subtasks answered
    assert (row(metrics, "bbh", "direct", "mixed")["n"], row(metrics, "bbh", "cot", "mixed")["n"]) == (2, 1)
    assert list(metrics["suites"]["bbh:date_understanding"]["variants"]) == ["direct"]
    assert row(metrics, "bbh:date_understanding", "direct", "mixed")["score"] == pytest.approx(0.5)
    assert row(metrics, "bbh:navigate", "cot", "mixed")["score"] == 1.0


@needs_data
def test_bbh_record_with_another_target_names_its_line(tmp_path: Path) -> None:
    ex = bbh_examples("navigate", 2)
    records = [{"input": e["input"], "prediction": "No", "target": e["target"]} for e in ex]
    records[1]["target"] = "Maybe"
    path = write_jsonl(tmp_path / "preds.jsonl", records)
    with pytest.raises(HarnessError, match=r"preds.jsonl line 2: target 'Maybe' differs"):
        score_responses("bbh:navigate", path, data_dir=DATA, out_dir=None, mode="direct")


# -- the harness's own run record ------------------------------------------------------------------


def test_run_record_round_trip_gives_identical_scores_and_metrics(tmp_path: Path) -> None:
    from harness.aggregate import summarize_suites
    from harness.store.record import write_record
    from harness.suites import load_suites
    from harness.suites.base import Response

    suite = load_suites("cot-basic", limit=6, seed=7)[0]
    items = suite.items()

    def answers(model: str) -> dict[Any, Response]:
        out = {}
        for n, item in enumerate(items):
            gold = item.doc["answer"]
            text = {
                0: f" So {gold}. The answer is {gold}.",
                1: f" It is {gold}",
                2: " The answer is 999.",
            }[(n + (model == "student")) % 3]
            finish = "length" if (model == "teacher" and n == 4) else "stop"
            out[item.requests[0]] = Response(text=text, finish_reason=finish)
        return out

    results = [r for m in ("teacher", "student") for r in suite.score(m, answers(m))]
    roles = {"teacher": "teacher", "student": "student"}
    original = {"suites": summarize_suites([suite], results, roles, 7, 300), "kd": {}, "notes": []}
    manifest = {
        "config": {"limit": 6, "seed": 7, "bootstrap": 300, "shots": None, "icl_draws": None},
        "models": {"teacher": {"role": "teacher"}, "student": {"role": "student"}},
    }
    write_record(tmp_path / "run", manifest, results, original)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())

    metrics = score_responses("cot-basic", tmp_path / "run", data_dir=None, out_dir=tmp_path / "out")
    assert metrics["suites"] == written["suites"]
    assert metrics["rescore"]["models"] == roles and metrics["rescore"]["seed"] == 7
    before = read_items(tmp_path / "run" / "items.jsonl")
    after = read_items(tmp_path / "out" / "items.jsonl")
    assert after == before
    assert sum(r["truncated"] for r in after) == 1
    assert {r["score"] for r in after} == {0.0, 1.0}

    only = score_responses(
        "cot-basic", tmp_path / "run", data_dir=None, out_dir=None, model="student", mode="cot"
    )
    assert list(only["suites"]["cot-basic"]["variants"]) == ["cot"]
    assert (
        only["suites"]["cot-basic"]["variants"]["cot"]["student"]
        == written["suites"]["cot-basic"]["variants"]["cot"]["student"]
    )


def test_a_compare_run_record_re_scores_to_the_same_metrics_and_items(tmp_path: Path) -> None:
    """A real record (mock models): chat-template prompts (if-basic), ICL draws, two models."""
    from harness.cli import main

    argv = ["compare", "mock:teacher", "mock:student", "--suite", "cot-basic,if-basic,icl-basic"]
    argv += ["--icl-draws", "2", "--limit", "4", "--no-kd", "--no-report", "--bootstrap", "200"]
    argv += ["--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--seed", "5"]
    assert main(argv) == 0
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["suites"]["if-basic"]["chat_template"] is True

    metrics = score_responses(
        "cot-basic,if-basic,icl-basic", tmp_path / "run", data_dir=None, out_dir=tmp_path / "out"
    )
    assert metrics["suites"] == written["suites"]
    key = lambda r: (r["suite"], r["variant"], r["item_id"], r["model"])  # noqa: E731

    def without_token_counts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # saved text re-scores without its token ids, so the live run's token counts are not repeated
        for r in rows:
            r["details"].pop("generated_tokens", None)
        return sorted(rows, key=key)

    before = without_token_counts(read_items(tmp_path / "run" / "items.jsonl"))
    assert without_token_counts(read_items(tmp_path / "out" / "items.jsonl")) == before
    assert len(before) == 2 * 4 * (2 + 1 + 5 + 4)  # models x items x (cot-basic, if-basic, icl-basic + draws)


# -- limits and bad input --------------------------------------------------------------------------------


def test_limit_skips_records_beyond_it() -> None:
    # if-basic's first three items are 1000-1002; of the five records only 1002's is within
    metrics = score_responses(
        "if-basic", CASES / "if_basic_responses.jsonl", data_dir=None, out_dir=None, limit=3
    )
    assert row(metrics, "if-basic", "default", "if_basic_responses")["n"] == 1
    assert metrics["rescore"]["skipped"] == 4


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("if_basic_missing_field.jsonl", r"if_basic_missing_field.jsonl line 2: missing field 'response'"),
        (
            "if_basic_unknown_prompt.jsonl",
            r"if_basic_unknown_prompt.jsonl line 3: unknown prompt 'Write a haiku",
        ),
        ("bad_json.jsonl", r"bad_json.jsonl line 2 is not valid JSON"),
        ("no_such_file.jsonl", r"no_such_file.jsonl does not exist"),
    ],
)
def test_bad_responses_files_name_the_line(case: str, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        score_responses("if-basic", CASES / case, data_dir=None, out_dir=None)


def test_unknown_subtask_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"input": "x", "prediction": "(A)", "target": "(A)", "mode": "cot"}]
    )
    with pytest.raises(HarnessError, match=r"no subtask 'navigat'; valid subtasks: boolean_expressions, "):
        score_responses("bbh", path, data_dir=None, out_dir=None, subtask="navigat")
    write_jsonl(
        path, [{"input": "x", "prediction": "(A)", "target": "(A)", "mode": "cot", "subtask": "nope"}]
    )
    with pytest.raises(
        HarnessError, match=r"p.jsonl line 1: suite bbh has no subtask 'nope'; valid subtasks"
    ):
        score_responses("bbh", path, data_dir=None, out_dir=None)


def test_bbh_records_need_a_subtask_and_a_mode(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"input": "x", "prediction": "(A)", "target": "(A)"}] * 2)
    with pytest.raises(HarnessError, match=r"p.jsonl line 1: which BBH subtask .*--subtask NAME"):
        score_responses("bbh", path, data_dir=None, out_dir=None, mode="cot")
    with pytest.raises(HarnessError, match=r"p.jsonl line 1: which variant .*--mode cot\|direct"):
        score_responses("bbh", path, data_dir=None, out_dir=None, subtask="navigate")


def test_other_bad_input(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(HarnessError, match=r"odd.jsonl line 1: unknown record format"):
        score_responses("if-basic", path, data_dir=None, out_dir=None)
    samples = write_jsonl(
        tmp_path / f"samples_arc_easy_{DATE}.jsonl",
        [{"doc_id": 0, "doc": {}, "resps": [["x"]], "arguments": [["p", {}]]}],
    )
    with pytest.raises(HarnessError, match=r"line 1: lm-eval task 'arc_easy' is not a task of gsm8k-cot"):
        score_responses("gsm8k-cot", samples, data_dir=None, out_dir=None)  # known before loading
    with pytest.raises(HarnessError, match=r"line 1: lm-eval task 'arc_easy' is not a task of the suites"):
        score_responses("if-basic", samples, data_dir=None, out_dir=None)  # known once loaded
    with pytest.raises(HarnessError, match=r"folder .* holds neither a harness run record"):
        (tmp_path / "empty").mkdir()
        score_responses("if-basic", tmp_path / "empty", data_dir=None, out_dir=None)
    items = write_jsonl(
        tmp_path / "items.jsonl",
        [{"suite": "if-basic", "variant": "default", "item_id": "1000", "model": "a", "output": "x"}],
    )
    with pytest.raises(HarnessError, match=r"items.jsonl has no rows of model 'nobody'; its models: a"):
        score_responses("if-basic", items, data_dir=None, out_dir=None, model="nobody")
    with pytest.raises(
        HarnessError, match=r"items.jsonl holds no results of cot-basic \(its suites: if-basic\)"
    ):
        score_responses("cot-basic", items, data_dir=None, out_dir=None)


def test_format_summary_is_a_table_with_every_metric() -> None:
    metrics = score_responses("if-basic", CASES / "if_basic_responses.jsonl", data_dir=None, out_dir=None)
    text = format_summary(metrics)
    header, line = text.splitlines()[:2]
    assert header.split()[:5] == ["suite", "variant", "model", "score", "95%"]
    assert line.split()[:4] == ["if-basic", "default", "if_basic_responses", "0.400"]
    assert "inst_level_strict_acc,none=0.500" in line and "prompt_level_loose_acc,none=0.600" in line
    assert "note: re-scored 5 items" in text
