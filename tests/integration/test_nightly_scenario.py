"""The nightly regression scenario on a real model trained in the session (nothing mocked).

A tiny llama learns the built-in icl-basic antonyms (about 15 s on one core); it is the teacher, and a
copy with a little noise is the student. Night 1 commits a baseline into a run store; night 2 runs the
unchanged student and passes the gate (exit 0); night 3 runs the student after its weights were
damaged on purpose and fails the gate (exit 1), naming the metrics; the history page shows all three.
The kill test runs `harness run` as a subprocess, SIGKILLs it at random moments, reruns it, and checks
that the committed record equals the uninterrupted night 1's and that the store holds it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.store.index import RunStore

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STEPS, BATCH, LR, SEED = 200, 32, 1e-2, 0
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _train(out: Path) -> Path:
    """Tokenizer (antonym words as tokens) + a 2-layer llama trained on 'word -> antonym' lines."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.suites.generators import antonym_pairs
    from tests.tiny_model import SPECIAL_TOKENS, _save_tokenizer, corpus

    torch.set_num_threads(1)
    pairs = antonym_pairs()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(corpus(SEED)[:500] + [f"{w} -> {a[0]}" for w, a in pairs] * 20, trainer=trainer)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n_vocab = _save_tokenizer(tok, tmp)
    config = LlamaConfig(
        vocab_size=n_vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).float()
    rng = random.Random(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    for step in range(STEPS):
        # first the mapping on single lines, then the few-shot format the suite uses (k = 0, 1, 2, 8)
        ks = [0] * 128 if step < STEPS // 2 else [rng.choice([0, 1, 2, 8]) for _ in range(BATCH)]
        ids_rows, label_rows = [], []
        for k in ks:
            ids: list[int] = []
            labels: list[int] = []
            for w, a in rng.sample(pairs, k + 1):
                q, ans = tok.encode(f"{w} ->").ids, tok.encode(f" {a[0]}\n").ids
                ids += q + ans
                labels += [-100] * len(q) + ans  # the loss is on the answers only
            ids_rows.append(ids)
            label_rows.append(labels)
        width = max(map(len, ids_rows))
        batch = torch.zeros(len(ks), width, dtype=torch.long)
        target = torch.full((len(ks), width), -100)
        for i, (x, y) in enumerate(zip(ids_rows, label_rows, strict=True)):
            batch[i, : len(x)], target[i, : len(y)] = torch.tensor(x), torch.tensor(y)
        loss = model(input_ids=batch, labels=target).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _perturb(src: Path, dst: Path, scale: float, layers: tuple[str, ...] = ()) -> Path:
    """A copy of `src` with gaussian noise of `scale` times each tensor's std on the named tensors
    (all when none are named); a small scale keeps the behaviour, a large one damages it."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    weights = load_file(str(dst / "model.safetensors"))
    gen = torch.Generator().manual_seed(1)
    for name, tensor in weights.items():
        if (
            tensor.dtype.is_floating_point
            and tensor.ndim == 2
            and (not layers or any(x in name for x in layers))
        ):
            noise = torch.randn(tensor.shape, generator=gen) * float(tensor.std()) * scale
            weights[name] = (tensor + noise).contiguous()
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def teacher_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("nightly-models")) if cache is not None else tmp_path_factory.mktemp("models")
    key = hashlib.sha256(Path(__file__).read_bytes().split(b"def _perturb")[0]).hexdigest()[:12]
    out = root / f"antonyms-{key}"
    return out if (out / "config.json").exists() else _train(out)


def _config(path: Path, teacher: Path, student: Path, store: Path, cache: Path) -> Path:
    path.write_text(
        f"""
teacher: hf:{teacher}
students: [{{path: {student}, backend: hf, label: student}}]
suites: [icl-basic]
limit: 24
shots: [0, 8]
icl_draws: 1
bootstrap: 200
kd_max_sequences: 6
kd_max_tokens: 6
kd_cka_positions: 0
chunk_size: 8
cache_dir: {cache}
store: {store}
formats: html
tags: [nightly]
tags_on_pass: [nightly-good]
baseline: {{tag: nightly-good}}
"""
    )  # no margins: the defaults, widened to what 24 items support (README, "Sized default margins")
    return path


@pytest.fixture(scope="module")
def scenario(teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("nightly")
    student = _perturb(teacher_dir, root / "student", 0.01)  # a distinct student that behaves the same
    config = _config(root / "nightly.yaml", teacher_dir, student, root / "store", root / "cache")
    yield {"root": root, "student": student, "config": config, "teacher": teacher_dir}


def _metrics(run_dir: Path) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("cost")  # each run's own timings and memory
    return metrics


def test_the_gate_passes_an_unchanged_student_and_fails_a_damaged_one(
    scenario: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    config, student = scenario["config"], scenario["student"]
    assert main(["run", str(config)]) == 0  # night 1: the baseline (no nightly-good yet)
    assert main(["run", str(config)]) == 0  # night 2: the same student passes
    night2 = capsys.readouterr().out
    assert "verdict: pass" in night2
    _perturb(scenario["teacher"], student, 3.0, layers=("layers.1.",))  # night 3: the weights went bad
    code = main(["run", str(config)])
    night3 = capsys.readouterr().out
    assert code == 1, night3
    assert "REGRESSION in" in night3 and "icl-basic/exact_match,first-word [student]" in night3
    store = RunStore(scenario["root"] / "store")
    runs = store.runs()
    assert [r.verdict for r in runs] == [None, "pass", "regression"]
    assert store.resolve_id("nightly-good") == runs[1].run_id  # a regression does not become the baseline
    verdict = json.loads((runs[2].path / "regress.json").read_text())
    icl = next(m for m in verdict["metrics"] if m["suite"] == "icl-basic")
    assert icl["baseline"] >= 0.5 and icl["current"] <= icl["baseline"] - 0.3 and icl["regressed"]
    assert _metrics(runs[0].path)["suites"] == _metrics(runs[1].path)["suites"]  # night 2 = night 1
    report = (runs[2].path / "index.html").read_text()  # rendered after the gate: it shows the verdict
    assert 'class="verdict verdict-regression"' in report
    assert main(["history", "--store", str(scenario["root"] / "store")]) == 0
    html = (scenario["root"] / "store" / "history.html").read_text()
    assert all(f'id="run-{r.run_id}"' in html for r in runs)
    assert (
        '<span class="pill good">pass</span>' in html and '<span class="pill bad">regression</span>' in html
    )
    print(f"\nscenario: {time.perf_counter() - started:.1f} s; night 3 gate:\n{night3}", file=sys.stderr)
    _both_modes(runs)
    scenario["reference"] = runs[0].path


def _both_modes(runs: list[Any]) -> None:
    """Nights 2 and 3 against their baselines in both modes, with the sized default and two set margins.
    24 identical items cannot show non-inferiority within a set 2 points (p 0.24, the honest answer)."""
    from harness.regress import gate, load_for_gate

    records = [load_for_gate(r.path) for r in runs]
    found = {}
    for night, (b, c) in ((2, (0, 1)), (3, (1, 2))):
        for test in ("non-inferiority", "regression"):
            for margin in ("default", "0.15", "0.02"):
                margins = {} if margin == "default" else {"score": margin}
                verdict = gate(records[b], records[c], margins=margins, test=test)
                icl = next(m for m in verdict.metrics if m.suite == "icl-basic")
                found[(night, test, margin)] = verdict.exit_code
                print(f"night {night} {test:15s} margin {margin}: exit {verdict.exit_code}; "
                      f"icl p {icl.p_value:.3g} Holm {icl.p_holm:.3g} p_worse {icl.p_worse:.3g} "
                      f"drop_upper {icl.drop_upper:.3f}: {icl.status()}", file=sys.stderr)  # fmt: skip
    assert all(
        found[(2, test, m)] == 0 for test in ("non-inferiority", "regression") for m in ("default", "0.15")
    )
    assert found[(2, "non-inferiority", "0.02")] == 1 and found[(2, "regression", "0.02")] == 0
    assert all(
        found[(3, test, m)] == 1
        for test in ("non-inferiority", "regression")
        for m in ("default", "0.15", "0.02")
    )


def _rows(cache: Path) -> int:
    try:
        with sqlite3.connect(cache / "responses.sqlite", timeout=1) as db:
            return sum(
                int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in ("responses", "blobs")
            )
    except sqlite3.Error:
        return 0


def test_harness_run_killed_at_random_moments_resumes_to_the_same_record(
    scenario: dict[str, Any], tmp_path: Path
) -> None:
    reference = scenario.get("reference")
    if reference is None:
        pytest.skip("needs the scenario's uninterrupted night 1 (run the module in order)")
    student = _perturb(scenario["teacher"], tmp_path / "student", 0.01)
    config = _config(
        tmp_path / "nightly.yaml", scenario["teacher"], student, tmp_path / "store", tmp_path / "c"
    )
    rng = random.Random(7)
    kills, committed = 0, []
    for _ in range(4):  # bounded: at most 4 kills, then a run to the end
        process = subprocess.Popen(
            [sys.executable, "-m", "harness", "run", str(config)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        rows = _rows(tmp_path / "c")
        deadline = time.time() + 120
        # each kill lands at a random moment after this attempt committed something new
        while process.poll() is None and time.time() < deadline and _rows(tmp_path / "c") <= rows:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is not None:
            break  # it finished before the kill: that run is the one to check
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        committed.append(_rows(tmp_path / "c"))
        assert RunStore(tmp_path / "store").runs() == []  # nothing half-written is ever listed
    assert kills >= 1
    if process.returncode == -signal.SIGKILL:  # the last attempt was killed: run to the end
        result = subprocess.run(
            [sys.executable, "-m", "harness", "run", str(config)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        assert process.returncode == 0
    (run,) = RunStore(tmp_path / "store").runs()
    print(f"\nkills: {kills}, cached answers after each: {committed}", file=sys.stderr)
    manifest = json.loads((run.path / "manifest.json").read_text())
    reused = sum(
        phase.get("from_cache", 0)
        for model in manifest["models"].values()
        for phase in model["timings"].values()
        if isinstance(phase, dict)
    )
    assert reused >= committed[0] > 0  # what the killed attempts committed was not computed again
    assert len(set(committed)) == len(committed)  # every attempt got further before it was killed
    assert _metrics(run.path) == _metrics(reference)
    items = [json.loads(line) for line in (run.path / "items.jsonl").read_text().splitlines()]
    assert items == [json.loads(line) for line in (reference / "items.jsonl").read_text().splitlines()]
    assert not list((tmp_path / "store" / ".staging").iterdir())
    assert not list((tmp_path / "store" / ".pending").iterdir())
