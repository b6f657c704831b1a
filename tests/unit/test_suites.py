"""Suite loading, request building and scoring through lm-eval's real filters and metrics (no model)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.suites import list_suites, load_suite, tasks_dir, validate_suite_file
from harness.suites.base import Request, Response
from harness.suites.suite import LmEvalSuite


@pytest.fixture(scope="module")
def icl() -> LmEvalSuite:
    return load_suite("icl-basic", limit=6)


@pytest.fixture(scope="module")
def cot() -> LmEvalSuite:
    return load_suite("cot-basic", limit=6)


def answer_all(suite: LmEvalSuite, reply) -> dict[Request, Response]:
    """A scripted model: reply(request) -> Response, for every request of the suite."""
    return {r: reply(r) for item in suite.item_requests() for r in item.requests}


def gold_by_prompt(suite: LmEvalSuite) -> dict[str, str]:
    """prompt -> first gold answer, from the suite's own items (one model's scoring pass)."""
    results = suite.score("probe", answer_all(suite, lambda r: Response(text="")))
    return {r.prompt: r.target.split(" | ")[0] for r in results}


# -- loading ------------------------------------------------------------------------------------------
def test_builtin_suites_are_listed_with_their_variants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    infos = {info.name: info for info in list_suites()}
    assert set(infos) == {"icl-basic", "cot-basic", "if-basic", "mc-basic", "gsm8k-cot", "bbh", "ifeval"}
    assert infos["icl-basic"].ability == "icl" and infos["icl-basic"].variants[:2] == ("k=0", "k=1")
    assert infos["cot-basic"].variants == ("cot", "direct") and infos["if-basic"].variants == ("default",)
    assert all(infos[n].n_items is not None and infos[n].n_items >= 30 for n in ("icl-basic", "if-basic"))
    # without data the public benchmarks are listed with the reason, not loaded
    assert infos["gsm8k-cot"].n_items is None and "--data-dir" in infos["gsm8k-cot"].note
    assert len(infos["bbh"].subtasks) == 27 and infos["bbh"].n_items is None


def test_load_by_name_and_by_path_agree(icl: LmEvalSuite) -> None:
    by_path = load_suite(str(tasks_dir() / "icl-basic" / "suite.yaml"), limit=6)
    assert by_path.item_requests() == icl.item_requests()
    assert by_path.info() == icl.info()


def test_limit_keeps_the_first_items(icl: LmEvalSuite) -> None:
    info = icl.info()
    assert info.n_items == 6
    extra_draws = sum(len(d) for d in info.draws.values())
    assert extra_draws == 2 * 4  # three seeded draws for each k > 0
    assert len(icl.item_requests()) == 6 * (len(info.variants) + extra_draws)


def test_tasks_dir_comes_from_the_environment_when_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HARNESS_TASKS_DIR", str(tmp_path))
    assert tasks_dir() == tmp_path
    with pytest.raises(HarnessError, match="no built-in suites found"):
        list_suites()


def test_validate_reads_every_item() -> None:
    info = validate_suite_file(tasks_dir() / "cot-basic" / "suite.yaml")
    assert info.name == "cot-basic" and info.n_items == 36


# -- bad input -------------------------------------------------------------------------------------------
SUITE = """name: tiny
ability: icl
chance: 0.0
task: task.yaml
shots: [0, 1]
max_tokens: 4
primary_metric: exact_match,none
"""
TASK = """task: tiny_task
dataset_path: json
dataset_kwargs:
  data_files:
    test: data.jsonl
test_split: test
fewshot_config:
  sampler: first_n
  split: test
output_type: generate_until
doc_to_text: "{{q}} ->"
doc_to_target: "{{a}}"
generation_kwargs:
  until: ["\\n"]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
DATA = '{"q": "a", "a": "b"}\n{"q": "c", "a": "d"}\n{"q": "e", "a": "f"}\n'


def write_suite(root: Path, suite: str = SUITE, task: str = TASK, data: str = DATA) -> Path:
    (root / "suite.yaml").write_text(suite)
    (root / "task.yaml").write_text(task)
    (root / "data.jsonl").write_text(data)
    return root / "suite.yaml"


def test_a_user_suite_loads_from_another_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_suite(tmp_path)
    monkeypatch.chdir("/")  # data_files are relative to the task YAML, not the cwd
    suite = load_suite(str(path), limit=None)
    prompts = [item.requests[0].prompt for item in suite.item_requests() if item.variant == "k=1"]
    assert prompts[0] == "c -> d\n\na ->"  # first_n with the eval doc removed
    results = suite.score("m", answer_all(suite, lambda r: Response(text=" x")))
    assert [r.score for r in results] == [0.0] * 6


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s + "temperature: 0.7\n", r"unknown key 'temperature'; allowed keys: name, ability"),
        (
            lambda s: s.replace("primary_metric: exact_match,none\n", ""),
            r"missing required key 'primary_metric'",
        ),
        (lambda s: s + "draws: 0\n", r"draws: Input should be greater than or equal to 1"),
        (
            lambda s: s.replace("shots: [0, 1]", "shots: [0, 1]\nsubtasks: {a: {chance: 2}}"),
            r"chance must be",
        ),
        (lambda s: s + "overrides: {k=5: {}}\n", r"overrides name variants"),
        (
            lambda s: s.replace("ability: icl", "ability: math"),
            r"ability: Input should be 'icl', 'cot' or 'if'",
        ),
        (lambda s: s.replace("shots: [0, 1]", "shots: [0, 0]"), r"shots: .*distinct"),
        (lambda s: s.replace("ability: icl", "ability: cot"), r"a cot suite names `tasks: \{cot: FILE"),
        (lambda s: s.replace("task.yaml", "nope.yaml"), r"task file .*nope.yaml does not exist"),
        (
            lambda s: s.replace("exact_match,none", "accuracy,none"),
            r"primary_metric 'accuracy,none' is not produced",
        ),
        (lambda s: "", r"suite\.yaml is empty"),
        (lambda s: "name: [unclosed\n", r"is not valid YAML"),
        (lambda s: "- a list\n", r"must be a mapping"),
    ],
)
def test_bad_suite_files_give_one_line_errors(tmp_path: Path, edit, message: str) -> None:
    path = write_suite(tmp_path, suite=edit(SUITE))
    with pytest.raises(HarnessError, match=message) as err:
        load_suite(str(path), limit=None)
    assert "\n" not in str(err.value)
    assert str(path.parent) in str(err.value)


def test_a_data_line_that_is_not_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_suite(tmp_path, data=DATA + '{"q": "g", "a": }\n')
    with pytest.raises(HarnessError, match=r"data\.jsonl line 4 is not valid JSON"):
        validate_suite_file(path)


def test_an_empty_data_file_is_an_empty_suite(tmp_path: Path) -> None:
    path = write_suite(tmp_path, data="\n")
    with pytest.raises(HarnessError, match=r"data\.jsonl has no items"):
        load_suite(str(path), limit=None)


def test_a_data_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_suite(tmp_path, data=DATA + "[1, 2]\n")
    with pytest.raises(HarnessError, match=r"line 4 is a JSON list, not an object"):
        load_suite(str(path), limit=None)


def test_an_unreadable_suite_file(tmp_path: Path) -> None:
    path = write_suite(tmp_path)
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(HarnessError, match="cannot read suite file"):
        load_suite(str(path), limit=None)


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(HarnessError, match="does not exist"):
        load_suite("/no/such/suite.yaml", limit=None)
    with pytest.raises(HarnessError, match=r"unknown suite 'nope': built-in suites are .*icl-basic"):
        load_suite("nope", limit=None)


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_must_be_positive(limit: int) -> None:
    with pytest.raises(HarnessError, match="limit must be a positive number"):
        load_suite("icl-basic", limit=limit)


# -- requests ---------------------------------------------------------------------------------------------
def test_requests_are_deterministic_across_calls_and_loads(icl: LmEvalSuite) -> None:
    first = icl.item_requests()
    assert icl.item_requests() == first
    assert load_suite("icl-basic", limit=6).item_requests() == first


def test_icl_prompts_hold_k_examples_drawn_per_item(icl: LmEvalSuite) -> None:
    items = icl.item_requests()
    for item in items:
        k = int(item.variant.removeprefix("k=").split("/")[0])
        (request,) = item.requests
        assert request.kind == "generate" and request.params is not None
        assert (
            request.params.max_tokens == 5
            and request.params.temperature == 0.0
            and request.params.stop == ("\n",)
        )
        assert request.prompt.count(" -> ") == k and request.prompt.endswith(" ->")
    four = [i.requests[0].prompt for i in items if i.variant == "k=4"]
    assert len(set(p.split("\n")[0] for p in four)) > 1  # examples are sampled, not one fixed block
    assert [i.item_id for i in items if i.variant == "k=0"] == [
        i.item_id for i in items if i.variant == "k=4"
    ]


def test_a_different_seed_draws_different_examples(tmp_path: Path) -> None:
    # icl-basic fixes fewshot_seed in its file; a suite without it takes load_suite's seed
    text = (tasks_dir() / "icl-basic" / "suite.yaml").read_text().replace("fewshot_seed: 1234\n", "")
    (tmp_path / "suite.yaml").write_text(
        text.replace("task: antonyms.yaml", f"task: {tasks_dir()}/icl-basic/antonyms.yaml")
    )
    one = load_suite(str(tmp_path / "suite.yaml"), limit=4, seed=1).item_requests()
    two = load_suite(str(tmp_path / "suite.yaml"), limit=4, seed=2).item_requests()
    assert one != two
    assert one == load_suite(str(tmp_path / "suite.yaml"), limit=4, seed=1).item_requests()


def test_cot_and_direct_share_items_and_exemplar_questions(cot: LmEvalSuite) -> None:
    items = cot.item_requests()
    by_variant = {v: [i for i in items if i.variant == v] for v in ("cot", "direct")}
    assert [i.item_id for i in by_variant["cot"]] == [i.item_id for i in by_variant["direct"]]
    for c, d in zip(by_variant["cot"], by_variant["direct"], strict=True):
        cq = re.findall(r"Q: (.*)\n", c.requests[0].prompt)
        dq = re.findall(r"Q: (.*)\n", d.requests[0].prompt)
        assert cq == dq and len(cq) == 5  # 4 exemplars + the item
        assert " = " in c.requests[0].prompt and " = " not in d.requests[0].prompt
        assert c.requests[0].params.max_tokens == 48 and d.requests[0].params.max_tokens == 10


# -- scoring through lm-eval's filters and metrics ------------------------------------------------------
def test_icl_perfect_and_wrong_answers(icl: LmEvalSuite) -> None:
    gold = gold_by_prompt(icl)
    perfect = icl.score(
        "good", answer_all(icl, lambda r: Response(text=f" {gold[r.prompt]}", finish_reason="stop"))
    )
    assert {r.score for r in perfect} == {1.0}
    assert all(r.extracted == r.target.split(" | ")[0] for r in perfect)
    wrong = icl.score("bad", answer_all(icl, lambda r: Response(text=" banana split", finish_reason="stop")))
    assert {r.score for r in wrong} == {0.0} and {r.extracted for r in wrong} == {"banana"}
    nothing = icl.score("mute", answer_all(icl, lambda r: Response(text=" 123", finish_reason="length")))
    assert all(r.extracted is None and r.truncated and r.score == 0.0 for r in nothing)
    assert icl.aggregate(perfect)["k=2"] == {"exact_match,first-word": 1.0}


def test_cot_strict_and_flexible_extraction_differ(cot: LmEvalSuite) -> None:
    gold = gold_by_prompt(cot)
    strict = cot.score(
        "s", answer_all(cot, lambda r: Response(text=f" So 1 + 1 = 2. The answer is {gold[r.prompt]}."))
    )
    flexible = cot.score("f", answer_all(cot, lambda r: Response(text=f" So it is 2 + 2 = {gold[r.prompt]}")))
    for r in strict:
        assert r.metrics == {"exact_match,strict-match": 1.0, "exact_match,flexible-extract": 1.0}
    for r in flexible:
        assert r.metrics == {"exact_match,strict-match": 0.0, "exact_match,flexible-extract": 1.0}
        assert r.score == 1.0 and r.extracted == r.target  # the primary metric is the flexible one


def test_no_leakage_between_models_scored_in_turn(icl: LmEvalSuite) -> None:
    gold = gold_by_prompt(icl)
    good = answer_all(icl, lambda r: Response(text=f" {gold[r.prompt]}"))
    bad = answer_all(icl, lambda r: Response(text=" nothing"))
    first = icl.score("good", good)
    middle = icl.score("bad", bad)
    again = icl.score("good", good)
    assert [r.score for r in first] == [r.score for r in again] == [1.0] * len(first)
    assert [r.score for r in middle] == [0.0] * len(middle)
    assert {r.model for r in middle} == {"bad"} and {r.output for r in middle} == {" nothing"}


def test_a_missing_response_is_an_error(icl: LmEvalSuite) -> None:
    answers = answer_all(icl, lambda r: Response(text=" x"))
    answers.pop(next(iter(answers)))
    with pytest.raises(ValueError, match="have no response"):
        icl.score("m", answers)


def test_generation_is_cut_at_stop_strings(cot: LmEvalSuite) -> None:
    gold = gold_by_prompt(cot)
    # an engine that returned text past a stop string: lm-eval's models cut at `until`, so do we
    results = cot.score(
        "m", answer_all(cot, lambda r: Response(text=f" The answer is {gold[r.prompt]}.\n\nQ: 99"))
    )
    assert all(r.score == 1.0 and "Q:" not in r.output for r in results)


# -- chat templates ------------------------------------------------------------------------------------------
def fake_render(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    text = "".join(f"[{m['role']}]{m['content']}[/{m['role']}]" for m in messages)
    return text + ("[assistant]" if add_generation_prompt else "")


def test_chat_prompts_are_rendered_by_the_model_renderer() -> None:
    suite = load_suite("icl-basic", limit=3, chat_template=True)
    assert suite.info().chat_template
    with pytest.raises(HarnessError, match="pass render="):
        suite.item_requests()
    items = suite.item_requests(render=fake_render)
    for item in items:
        k = int(item.variant.removeprefix("k=").split("/")[0])
        prompt = item.requests[0].prompt
        assert prompt.endswith("[assistant]")
        assert prompt.count("[user]") == k + 1 and prompt.count("[/assistant]") == k  # few-shot as turns
    gold = {r.prompt: r.target for r in suite.score("p", answer_all_rendered(suite, ""), render=fake_render)}
    scored = suite.score("m", answer_all_rendered(suite, gold), render=fake_render)
    assert {r.score for r in scored} == {1.0}


def answer_all_rendered(suite: LmEvalSuite, gold: dict[str, str] | str) -> dict[Request, Response]:
    requests = [r for item in suite.item_requests(render=fake_render) for r in item.requests]
    return {
        r: Response(text=gold if isinstance(gold, str) else gold[r.prompt].split(" | ")[0]) for r in requests
    }


def test_chat_can_be_switched_off_and_render_is_then_ignored() -> None:
    plain = load_suite("if-basic", limit=2, chat_template=False)
    items = plain.item_requests(render=fake_render)
    assert not plain.info().chat_template
    assert all("[user]" not in item.requests[0].prompt for item in items)
    assert plain.kd_prompts() == [item.requests[0].prompt for item in items]


MC_TASK = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: data.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{q}} ->"
doc_to_choice: ["yes", "no"]
doc_to_target: "{{label}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
MC_DATA = '{"q": "a", "label": 0}\n{"q": "b", "label": 1}\n'


def test_multiple_choice_goes_through_loglikelihood(tmp_path: Path) -> None:
    suite_text = SUITE.replace("exact_match,none", "acc,none").replace("shots: [0, 1]", "shots: [0]")
    suite = load_suite(str(write_suite(tmp_path, suite=suite_text, task=MC_TASK, data=MC_DATA)), limit=None)
    items = suite.item_requests()
    assert [len(i.requests) for i in items] == [2, 2]
    assert all(
        r.kind == "loglikelihood" and r.continuation in (" yes", " no") for i in items for r in i.requests
    )
    # a model that always prefers " yes": right on the first item only
    answers = {
        r: Response(logprob=-0.1 if r.continuation == " yes" else -2.0) for i in items for r in i.requests
    }
    results = suite.score("m", answers)
    assert [r.score for r in results] == [1.0, 0.0]
    assert [r.output for r in results] == ["yes", "yes"] and [r.target for r in results] == ["yes", "no"]
    assert results[0].details["option_logprobs"] == [-0.1, -2.0]


def test_mc_basic_scores_every_choice_by_loglikelihood() -> None:
    """The built-in multiple-choice suite: four loglikelihood requests per item (no generation), k-shot
    examples from the train pool, acc and acc_norm from lm-eval, and the choices' log-likelihoods kept
    for calibration."""
    import json

    suite = load_suite("mc-basic", limit=8)
    info = suite.info()
    assert info.ability == "icl" and info.variants == ("k=0", "k=4") and info.chance == 0.25
    items = suite.item_requests()
    assert len(items) == 16 and all(len(i.requests) == 4 for i in items)
    assert all(r.kind == "loglikelihood" for i in items for r in i.requests) and not suite.kd_prompts()
    docs = [json.loads(line) for line in (suite.path.parent / "data/test.jsonl").read_text().splitlines()]
    zero = [i for i in items if i.variant == "k=0"]
    assert zero[0].requests[0].prompt == f"Question: {docs[0]['question']}\nAnswer:"
    assert [r.continuation for r in zero[0].requests] == [" " + c for c in docs[0]["choices"]]
    four = next(i for i in items if i.variant == "k=4").requests[0].prompt
    assert four.count("Question: ") == 5 and four.endswith(zero[0].requests[0].prompt)
    # a model that prefers the gold choice on even items and the first choice elsewhere
    gold = {d["id"]: " " + d["choices"][d["label"]] for d in docs}
    answers = {}
    for item in items:
        for n, r in enumerate(item.requests):
            wins = r.continuation == gold[item.item_id] if int(item.item_id[-3:]) % 2 == 0 else n == 0
            answers[r] = Response(logprob=-0.5 if wins else -3.0)
    results = suite.score("m", answers)
    expected = [1.0 if int(d["id"][-3:]) % 2 == 0 or d["label"] == 0 else 0.0 for d in docs[:8]]
    assert [r.score for r in results if r.variant == "k=0"] == expected
    assert suite.aggregate(results)["k=4"]["acc,none"] == pytest.approx(sum(expected) / 8)
    assert set(results[0].metrics) == {"acc,none", "acc_norm,none"}
    assert len(results[0].details["option_logprobs"]) == 4
