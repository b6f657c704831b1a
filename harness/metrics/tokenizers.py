"""Can teacher and student be compared token by token? Compare their vocabularies, not their names.

Token-level divergences compare two distributions over token ids, so they are defined only when both
models map every token string to the same id (ModelInfo.tokenizer_id hashes exactly that table).
Special-token roles (which id is BOS/EOS/PAD) do not change the distributions being compared, so a
difference there is reported but does not block the token-level check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TOKEN_LEVEL = "identical vocabularies: token-level checks apply"
SEQUENCE_ONLY = "different vocabularies: only sequence-level checks apply"


def vocabulary_of(tokenizer: Any) -> tuple[dict[str, int], dict[str, str]]:
    """(token -> id, special-token role -> token) of a transformers tokenizer (added tokens included)."""
    vocab = {str(token): int(i) for token, i in tokenizer.get_vocab().items()}
    special: dict[str, str] = {}
    for role, value in dict(getattr(tokenizer, "special_tokens_map", {}) or {}).items():
        special[str(role)] = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return vocab, special


def compare_vocabularies(
    teacher: Mapping[str, int],
    student: Mapping[str, int],
    teacher_special: Mapping[str, str] | None = None,
    student_special: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The verdict and how far apart two vocabularies are.

    Returns {"identical", "verdict", "teacher_size", "student_size", "shared_tokens",
    "shared_same_id", "special_differences": {role: [teacher's, student's]}}; "identical" is True
    exactly when the token -> id maps are equal.
    """
    shared = set(teacher) & set(student)
    identical = dict(teacher) == dict(student)
    special_t, special_s = dict(teacher_special or {}), dict(student_special or {})
    roles = sorted(set(special_t) | set(special_s))
    return {
        "identical": identical,
        "verdict": TOKEN_LEVEL if identical else SEQUENCE_ONLY,
        "teacher_size": len(teacher),
        "student_size": len(student),
        "shared_tokens": len(shared),
        "shared_same_id": sum(1 for t in shared if teacher[t] == student[t]),
        "special_differences": {
            r: [special_t.get(r), special_s.get(r)] for r in roles if special_t.get(r) != special_s.get(r)
        },
    }
