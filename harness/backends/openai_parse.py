"""Parsing of OpenAI-compatible responses into the backend contract's values (openai backend)."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.backends.base import ScoreRequest, TokenScores
from harness.errors import InfrastructureError


def first_choice(data: dict[str, Any], model: str) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InfrastructureError(f"served model {model} sent a response without choices")
    return choices[0]


def token_id_map(entries: dict[str, Any]) -> dict[int, float]:
    """{"token_id:12": -0.3, ...} -> {12: -0.3}; entries keyed otherwise are skipped."""
    out = {}
    for key, value in (entries or {}).items():
        if isinstance(key, str) and key.startswith("token_id:"):
            out[int(key[len("token_id:") :])] = float(value)
    return out


def generation_top(
    choice: dict[str, Any], k: int, chat: bool
) -> tuple[tuple[tuple[int, float], ...], ...] | None:
    lp = choice.get("logprobs")
    if not lp:
        return None
    if chat:
        rows = [
            {e["token"]: e["logprob"] for e in (c.get("top_logprobs") or [])} for c in lp.get("content") or []
        ]
    else:
        rows = lp.get("top_logprobs") or []
    out = []
    for row in rows:
        ids = token_id_map(row or {})
        if not ids:
            return None  # tokens came back as text: no ids to report
        out.append(tuple(sorted(ids.items(), key=lambda kv: -kv[1])[:k]))
    return tuple(out)


def ids_from_logprobs(choice: dict[str, Any], chat: bool) -> list[int] | None:
    lp = choice.get("logprobs") or {}
    tokens = [c.get("token") for c in lp.get("content") or []] if chat else lp.get("tokens") or []
    if not tokens or not all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return None
    return [int(t[len("token_id:") :]) for t in tokens]


def prompt_scores(choice: dict[str, Any], r: ScoreRequest) -> TokenScores:
    """TokenScores from vLLM's prompt_logprobs: per position {id: {logprob, rank}}, the text's token
    always included, plus the top `r.top_k` by rank."""
    rows = choice.get("prompt_logprobs")
    n = len(r.token_ids)
    if not isinstance(rows, list) or len(rows) != n:
        raise InfrastructureError(f"the server returned {type(rows).__name__} prompt logprobs for {n} tokens")
    k = r.top_k
    token_lp = np.empty(n - r.start, dtype=np.float32)
    top_ids = np.empty((n - r.start, k), dtype=np.int64)
    top_lp = np.empty((n - r.start, k), dtype=np.float32)
    for p, row in enumerate(rows[r.start :]):
        entries = {int(t): e for t, e in (row or {}).items()}
        actual = entries.get(int(r.token_ids[r.start + p]))
        if actual is None:
            raise InfrastructureError("the server's prompt logprobs lack the scored token")
        token_lp[p] = actual["logprob"]
        ranked = sorted(
            (e["rank"], t, e["logprob"]) for t, e in entries.items() if e.get("rank") and e["rank"] <= k
        )
        if len(ranked) != k:
            raise InfrastructureError(f"the server returned {len(ranked)} top logprobs where {k} were asked")
        top_ids[p] = [t for _, t, _ in ranked]
        top_lp[p] = [lp for _, _, lp in ranked]
    return TokenScores(token_logprobs=token_lp, topk_ids=top_ids, topk_logprobs=top_lp)
