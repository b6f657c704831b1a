"""Sequence-level (text-only) checks: loops, distinct-n, ROUGE-L, NLL, final-answer agreement, and the
tokenizer verdict on real tokenizers that share a name but not a vocabulary."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.metrics.tokenizers import SEQUENCE_ONLY, TOKEN_LEVEL, compare_vocabularies, vocabulary_of
from harness.sequence import (
    distinct_n,
    final_answer,
    is_repetition_loop,
    nll_summary,
    output_diagnostics,
    rouge_l,
    sequence_checks,
)
from harness.suites.base import ItemResult

# ---- loops and distinct-n -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 4. " + "I think so. " * 10,  # a sentence loop
        "So the total is 12 apples and then " + "the the the the the the the the the the",  # one word
        "Therefore" + "!" * 30,  # punctuation, no spaces
        "Let me count: 1, 2, 3. " + "a b c d e f g " * 3 + "a b c",  # period 7, cut mid-cycle
        "x " + "step one, step two; " * 6 + "step",  # starts mid-cycle too
    ],
)
def test_degenerate_outputs_are_loops(text: str) -> None:
    assert is_repetition_loop(text)


@pytest.mark.parametrize(
    "text",
    [
        "Natalia sold 48 clips in April and half as many in May, so 48 + 24 = 72 clips in all.",
        "yes yes yes yes yes yes then the model stops repeating and explains its answer in full words",
        "a b a b",  # too short to call
        "",
        "one two three four five six seven eight nine ten eleven twelve",
    ],
)
def test_ordinary_outputs_are_not_loops(text: str) -> None:
    assert not is_repetition_loop(text)


def test_loop_period_limit_and_arguments() -> None:
    long_cycle = " ".join(f"w{i}" for i in range(25))
    assert not is_repetition_loop("intro " + (long_cycle + " ") * 4)  # period 25 > 20
    assert is_repetition_loop("intro " + (long_cycle + " ") * 4, max_period=25)
    with pytest.raises(HarnessError):
        is_repetition_loop("a b", tail_fraction=0.0)


def test_distinct_n_hand_values() -> None:
    assert distinct_n("a b a b c", 1) == pytest.approx(3 / 5)
    assert distinct_n("a b a b c", 2) == pytest.approx(3 / 4)  # ab, ba, ab, bc
    assert distinct_n("the the the", 2) == pytest.approx(1 / 2)
    assert distinct_n("one", 2) is None
    assert distinct_n("Yes!!", 1) == pytest.approx(2 / 3)  # "Yes", "!", "!"


# ---- ROUGE-L --------------------------------------------------------------------------------------


def test_rouge_l_hand_values_and_the_rouge_score_package() -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    cases = [
        ("the cat sat on the mat", "the cat lay on the mat", 5 / 6),  # LCS "the cat on the mat"
        ("a b c d", "d c b a", 1 / 4),  # LCS of length 1
        ("Natalia sold 72 clips.", "natalia SOLD 72 clips", 1.0),  # lower-cased, punctuation dropped
        ("x y z", "p q", 0.0),
        ("one two three four", "one two", 2 * (1.0 * 0.5) / 1.5),  # P 1, R 1/2
    ]
    for reference, prediction, expected in cases:
        assert rouge_l(reference, prediction) == pytest.approx(expected, rel=1e-12)
        assert rouge_l(reference, prediction) == scorer.score(reference, prediction)["rougeL"].fmeasure


# ---- NLL --------------------------------------------------------------------------------------


def test_nll_summary_against_a_float64_reference() -> None:
    rng = np.random.default_rng(0)
    per_token = [rng.exponential(2.0, n) for n in (5, 40, 12, 1)]
    sums, counts = [float(x.sum()) for x in per_token], [x.size for x in per_token]
    out = nll_summary(sums, counts, [3 * c for c in counts], seed=1)
    flat = np.concatenate(per_token)
    assert out["nll_per_token"] == pytest.approx(flat.mean(), rel=1e-12)
    assert out["perplexity"] == pytest.approx(math.exp(flat.mean()), rel=1e-12)
    assert out["bits_per_byte"] == pytest.approx(flat.sum() / math.log(2) / (3 * flat.size), rel=1e-12)
    assert out["ci_low"] < out["nll_per_token"] < out["ci_high"]
    assert out["perplexity_ci_low"] == pytest.approx(math.exp(out["ci_low"]))
    assert (out["n_sequences"], out["n_tokens"]) == (4, flat.size)
    one = nll_summary([2.0], [4])
    assert one["nll_per_token"] == 0.5 and one["ci_low"] is None and one["bits_per_byte"] is None
    assert nll_summary([], [])["nll_per_token"] is None
    assert nll_summary([math.inf, 1.0], [1, 1])["perplexity"] == math.inf
    with pytest.raises(HarnessError, match="equal-length"):
        nll_summary([1.0], [1, 2])


# ---- items --------------------------------------------------------------------------------------


def _item(model: str, item_id: str, *, suite: str = "gsm", variant: str = "cot", **kw: Any) -> ItemResult:
    fields: dict[str, Any] = {
        "suite": suite,
        "variant": variant,
        "item_id": item_id,
        "model": model,
        "prompt": "Q",
        "output": "",
        "target": "",
        "extracted": None,
        "score": 0.0,
    }
    fields.update(kw)
    return ItemResult(**fields)


ROLES = {"T": "teacher", "S": "student", "B": "base"}


def _run_items() -> list[ItemResult]:
    items = []
    teacher = ["42", "7", None, "3", "10"]
    student = ["42", "8", None, "3", None]  # agrees on 0, 2 (both none), 3: 3 of 5
    base = ["1", "2", "3", "4", "5"]  # agrees on none
    for i in range(5):
        for model, answers in (("T", teacher), ("S", student), ("B", base)):
            out = f"We compute it step by step. The answer is {answers[i]}."
            items.append(_item(model, str(i), extracted=answers[i], output=out, target=f"the answer is {i}"))
    # a multiple-choice suite: the chosen option is the answer
    for i, (t, s) in enumerate([("(A)", "(A)"), ("(B)", "(C)")]):
        for model, answer in (("T", t), ("S", s), ("B", t)):
            items.append(
                _item(
                    model,
                    str(i),
                    suite="mc",
                    variant="k=0",
                    output=answer,
                    details={"option_logprobs": [-1.0]},
                )
            )
    # IFEval-like: nothing is ever extracted, so agreement is undefined there
    for model in ROLES:
        items.append(
            _item(model, "0", suite="if", variant="default", output="Hello " * 3, truncated=model == "B")
        )
    return items


def test_final_answer_uses_the_extraction_or_the_chosen_option() -> None:
    assert final_answer(_item("T", "0", extracted=" 4 2 ", output="x")) == "4 2"
    assert final_answer(_item("T", "0", extracted=None, output="x")) is None
    assert final_answer(_item("T", "0", output="(A)", details={"option_logprobs": [0.0]})) == "(A)"


def test_agreement_per_suite_with_missing_answers_counted() -> None:
    out = sequence_checks(_run_items(), ROLES, n_boot=200)
    student = out["agreement"]["S"]
    gsm = student["suites"]["gsm"]["all"]
    assert gsm["value"] == pytest.approx(3 / 5) and gsm["n"] == 5
    assert (gsm["n_both_missing"], gsm["n_teacher_missing"], gsm["n_student_missing"]) == (1, 1, 2)
    assert gsm["ci_low"] <= 0.6 <= gsm["ci_high"]
    assert student["suites"]["gsm"]["variants"]["cot"]["value"] == pytest.approx(3 / 5)
    assert student["suites"]["mc"]["all"]["value"] == pytest.approx(1 / 2)
    assert student["suites"]["if"]["all"]["value"] is None
    assert student["suites"]["if"]["all"]["note"] == "no answers extracted"
    assert student["overall"]["value"] == pytest.approx(4 / 7)  # gsm + mc, not the IF suite
    assert out["agreement"]["B"]["suites"]["gsm"]["all"]["value"] == 0.0
    assert out["agreement"]["B"]["suites"]["mc"]["all"]["value"] == 1.0
    assert set(out["agreement"]) == {"S", "B"}


def test_agreement_pools_variants_of_a_suite_and_groups() -> None:
    items = []
    for variant, student_answers in (("k=0", ["1", "2"]), ("k=4", ["1", "9"])):
        for i in range(2):
            items.append(_item("T", str(i), suite="bbh:a", variant=variant, extracted=str(i + 1)))
            items.append(_item("S", str(i), suite="bbh:a", variant=variant, extracted=student_answers[i]))
    items.append(_item("T", "0", suite="bbh:b", variant="k=0", extracted="x"))
    items.append(_item("S", "0", suite="bbh:b", variant="k=0", extracted="y"))
    out = sequence_checks(items, {"T": "teacher", "S": "student"}, groups={"bbh:a": "bbh", "bbh:b": "bbh"})
    student = out["agreement"]["S"]
    assert student["suites"]["bbh:a"]["variants"]["k=0"]["value"] == 1.0
    assert student["suites"]["bbh:a"]["variants"]["k=4"]["value"] == 0.5
    assert student["suites"]["bbh:a"]["all"]["value"] == pytest.approx(3 / 4)
    assert student["groups"]["bbh"]["value"] == pytest.approx(3 / 5)


def test_rouge_per_suite_against_teacher_and_gold() -> None:
    out = sequence_checks(_run_items(), ROLES, n_boot=200)
    gsm = out["rouge_l"]["gsm"]
    expected = np.mean(
        [
            rouge_l(
                f"We compute it step by step. The answer is {t}.",
                f"We compute it step by step. The answer is {s}.",
            )
            for t, s in zip(["42", "7", None, "3", "10"], ["42", "8", None, "3", None], strict=True)
        ]
    )
    assert gsm["vs_teacher"]["S"]["value"] == pytest.approx(expected, rel=1e-12)
    gold = np.mean(
        [
            rouge_l(f"the answer is {i}", f"We compute it step by step. The answer is {a}.")
            for i, a in enumerate(["42", "7", None, "3", "10"])
        ]
    )
    assert gsm["vs_gold"]["T"]["value"] == pytest.approx(gold, rel=1e-12)
    assert "mc" not in out["rouge_l"]  # multiple choice has no free text
    assert out["rouge_l"]["if"]["vs_gold"] == {}  # no gold reference there
    assert "T" not in gsm["vs_teacher"]


def test_output_diagnostics_per_model() -> None:
    items = [
        _item("T", "0", output="Short answer: 4.", truncated=False, details={"generated_tokens": 5}),
        _item("T", "1", output="and so on " * 10, truncated=True, details={"generated_tokens": 64}),
        _item("T", "2", output="(A)", details={"option_logprobs": [0.0]}),  # multiple choice: not an output
    ]
    d = output_diagnostics(items)
    assert d["n_outputs"] == 2 and d["n_truncated"] == 1 and d["truncated_rate"] == 0.5
    assert d["n_loops"] == 1 and d["loop_rate"] == 0.5
    assert d["chars"]["mean"] == pytest.approx((16 + 100) / 2) and d["chars"]["max"] == 100
    assert d["words"]["mean"] == pytest.approx((3 + 30) / 2)
    assert d["tokens"]["mean"] == pytest.approx(34.5)
    assert d["distinct_1"] == pytest.approx((5 / 5 + 3 / 30) / 2)  # "Short answer : 4 ." all distinct
    del items[0].details["generated_tokens"]
    assert output_diagnostics(items)["tokens"] is None  # not recorded for every output
    out = sequence_checks(_run_items(), ROLES)
    assert out["models"]["B"]["suites"]["if"]["truncated_rate"] == 1.0
    assert out["models"]["T"]["role"] == "teacher" and "mc" not in out["models"]["T"]["suites"]


def test_without_a_teacher_there_is_no_agreement() -> None:
    out = sequence_checks(_run_items(), {"S": "student", "B": "base"})
    assert out["agreement"] == {} and set(out["models"]) == {"S", "B", "T"}


# ---- tokenizer verdict ----------------------------------------------------------------------------


def _hf_tokenizer(vocab_size: int, seed: int, name: str, eos: str = "</s>") -> Any:
    pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tests.tiny_model import _train_tokenizer

    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size, seed), bos_token="<s>", eos_token=eos, pad_token="<pad>"
    )
    tok.name_or_path = name
    return tok


def test_same_name_different_vocabulary_is_caught_by_tokenizer_id_and_the_verdict() -> None:
    from harness.backends._common import tokenizer_id

    a = _hf_tokenizer(400, 0, "org/tok")
    b = _hf_tokenizer(380, 0, "org/tok")  # same name, smaller vocabulary
    c = _hf_tokenizer(400, 0, "another/name")  # same vocabulary, another name
    assert a.name_or_path == b.name_or_path
    assert tokenizer_id(a) != tokenizer_id(b)
    assert tokenizer_id(a) == tokenizer_id(c)
    different = compare_vocabularies(a.get_vocab(), b.get_vocab())
    assert not different["identical"] and different["verdict"] == SEQUENCE_ONLY
    assert (different["teacher_size"], different["student_size"]) == (len(a), len(b))
    shared = set(a.get_vocab()) & set(b.get_vocab())
    assert different["shared_tokens"] == len(shared)
    assert different["shared_same_id"] == sum(a.get_vocab()[t] == b.get_vocab()[t] for t in shared)
    va, sa = vocabulary_of(a)
    vc, sc = vocabulary_of(c)
    same = compare_vocabularies(va, vc, sa, sc)
    assert same["identical"] and same["verdict"] == TOKEN_LEVEL and same["special_differences"] == {}


def test_special_token_roles_are_reported_without_blocking_token_level() -> None:
    from harness.backends._common import tokenizer_id

    a = _hf_tokenizer(400, 0, "t")
    d = _hf_tokenizer(400, 0, "t", eos="<pad>")  # same vocabulary, another EOS
    assert tokenizer_id(a) == tokenizer_id(d)  # the hash covers token -> id only
    va, sa = vocabulary_of(a)
    vd, sd = vocabulary_of(d)
    verdict = compare_vocabularies(va, vd, sa, sd)
    assert verdict["identical"] and verdict["special_differences"] == {"eos_token": ["</s>", "<pad>"]}
