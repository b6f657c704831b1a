"""How compare adapts its KD check to what a (served) teacher and student can return."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends import parse_model_spec
from harness.backends.base import Capabilities
from harness.compare import BLACK_BOX, _fit_top_k, _kd_mode, _Run, _scores_targets
from harness.config import CompareConfig
from harness.errors import HarnessError
from harness.kd import EXACT, LOWER_BOUND


class Caps:
    """Only what compare asks of a backend here."""

    def __init__(self, full: bool, top_k: int, targets: bool) -> None:
        self.caps = Capabilities(full_vocab_logprobs=full, max_top_k=top_k, target_token_logprobs=targets)

    def capabilities(self) -> Capabilities:
        return self.caps


def _config(tmp_path: Path, **kw: object) -> CompareConfig:
    spec = parse_model_spec("openai:http://127.0.0.1:1/v1#t")
    return CompareConfig(teacher=spec, students=(parse_model_spec("mock:s"),), cache_dir=tmp_path, **kw)  # type: ignore[arg-type]


SERVED = Caps(full=False, top_k=20, targets=True)
BLACK = Caps(full=False, top_k=0, targets=False)
LOCAL = Caps(full=True, top_k=768, targets=True)


def test_kd_mode_follows_the_teachers_logprobs(tmp_path: Path) -> None:
    assert _kd_mode(_config(tmp_path), LOCAL) == EXACT  # type: ignore[arg-type]
    assert _kd_mode(_config(tmp_path), SERVED) == LOWER_BOUND  # type: ignore[arg-type]
    assert _kd_mode(_config(tmp_path), BLACK) == BLACK_BOX  # type: ignore[arg-type]
    assert _kd_mode(_config(tmp_path, kd_mode="lower-bound"), BLACK) == BLACK_BOX  # type: ignore[arg-type]
    with pytest.raises(HarnessError, match="--kd-mode exact needs full-vocabulary"):
        _kd_mode(_config(tmp_path, kd_mode="exact"), SERVED)  # type: ignore[arg-type]


def test_students_that_cannot_score_the_teachers_tokens_get_text_checks(tmp_path: Path) -> None:
    assert _scores_targets(SERVED, LOWER_BOUND) and _scores_targets(LOCAL, LOWER_BOUND)  # type: ignore[arg-type]
    assert not _scores_targets(SERVED, EXACT)  # type: ignore[arg-type]
    assert not _scores_targets(BLACK, LOWER_BOUND)  # type: ignore[arg-type]
    assert not _scores_targets(LOCAL, BLACK_BOX)  # type: ignore[arg-type]


def test_kd_top_k_is_lowered_to_what_the_teacher_returns(tmp_path: Path) -> None:
    run = _Run(_config(tmp_path, kd_top_k=64), [], None)
    config = _fit_top_k(run, SERVED)  # type: ignore[arg-type]
    assert config.kd_top_k == 20 and run.config.kd_top_k == 20
    assert run.notes == ["the teacher returns at most 20 top logprobs: KD lower bound over its top-20"]
    assert _fit_top_k(run, SERVED).kd_top_k == 20 and len(run.notes) == 1  # type: ignore[arg-type]
    run.cache.close()
