"""compare() end to end on the scripted mock backend and a hand-written suite: scheduling, caching, record."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from harness.backends import parse_model_spec
from harness.backends.base import SamplingParams
from harness.compare import run_compare
from harness.config import CompareConfig
from harness.errors import HarnessError
from harness.store.record import read_record
from harness.suites.base import ItemRequests, ItemResult, Request, Response, SuiteInfo

PARAMS = SamplingParams(max_tokens=8, stop=("\n",))


class EchoSuite:
    """Items 'say wordN'; the mock echoes the last word, so a model is right unless scripted otherwise."""

    def __init__(self, n: int = 6) -> None:
        self.n = n

    def info(self) -> SuiteInfo:
        return SuiteInfo(
            name="echo",
            ability="icl",
            description="echo the word",
            variants=("k=0", "k=1"),
            baseline_variant="k=0",
            primary_metric="exact_match",
            chance=0.0,
            n_items=self.n,
        )

    def _prompt(self, variant: str, i: int) -> str:
        shot = "say word99 word99\n" if variant == "k=1" else ""
        return f"{shot}say word{i}"

    def item_requests(self, render: object = None) -> list[ItemRequests]:
        return [
            ItemRequests(v, str(i), (Request("generate", self._prompt(v, i), params=PARAMS),))
            for v in self.info().variants
            for i in range(self.n)
        ]

    def score(
        self, model: str, responses: Mapping[Request, Response], render: object = None
    ) -> list[ItemResult]:
        out = []
        for item in self.item_requests():
            text = responses[item.requests[0]].text.strip()
            target = f"word{item.item_id}"
            out.append(
                ItemResult(
                    suite="echo",
                    variant=item.variant,
                    item_id=item.item_id,
                    model=model,
                    prompt=item.requests[0].prompt,
                    output=text,
                    target=target,
                    extracted=text,
                    score=float(text == target),
                )
            )
        return out

    def kd_prompts(self, render: object = None) -> list[str]:
        return [self._prompt("k=0", i) for i in range(self.n)]


def _student_script(prompt: str) -> str:
    """A student that gets odd items wrong in the 0-shot variant."""
    word = prompt.split()[-1]
    return " wrong" if ("\n" not in prompt and int(word[4:]) % 2) else f" {word}"


def _config(tmp_path: Path, **kw: object) -> CompareConfig:
    settings: dict[str, object] = {
        "teacher": parse_model_spec("mock:teacher"),
        "students": (parse_model_spec("mock:student"),),
        "base": parse_model_spec("mock:base"),
        "suites": ("echo",),
        "out_dir": tmp_path / "run",
        "cache_dir": tmp_path / "cache",
        "bootstrap": 200,
    }
    return CompareConfig(**{**settings, **kw})  # type: ignore[arg-type]


@pytest.fixture()
def scripted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Route load_backend to mock backends with per-model scripts and noise; count loads."""
    from harness import models as models_module
    from harness.backends.mock import MockBackend

    loads: dict[str, int] = {}

    def fake_load(spec, **_):  # type: ignore[no-untyped-def]
        loads[spec.path] = loads.get(spec.path, 0) + 1
        script = _student_script if spec.path == "student" else None
        return MockBackend(
            spec.path, script=script, noise={"teacher": 0.5, "student": 0.6, "base": 3.0}[spec.path]
        )

    monkeypatch.setattr(models_module, "load_backend", fake_load)
    return loads


def test_compare_writes_a_complete_record(tmp_path: Path, scripted: dict[str, int]) -> None:
    run_dir = run_compare(_config(tmp_path), [EchoSuite()])
    record = read_record(run_dir)
    assert scripted == {"teacher": 1, "student": 1, "base": 1}  # each model loaded once
    suite = record.metrics["suites"]["echo"]
    assert suite["variants"]["k=0"]["teacher"]["score"] == 1.0
    assert suite["variants"]["k=0"]["student"]["score"] == pytest.approx(0.5)
    assert suite["variants"]["k=1"]["student"]["score"] == 1.0
    assert suite["retention"]["student"]["k=0"]["value"] == pytest.approx(0.5)
    assert suite["gain"]["student"]["k=1"]["value"] == pytest.approx(0.5)
    assert len(record.items) == 3 * 2 * 6
    kd = record.metrics["kd"]
    assert kd["student"]["semantics"] == "full-vocab"
    t1_student = kd["student"]["temperatures"]["1"]["forward_kl"]["mean"]
    t1_base = kd["base"]["temperatures"]["1"]["forward_kl"]["mean"]
    assert 0 < t1_student < t1_base  # the noisier base is further from the teacher
    assert set(kd["student"]["temperatures"]) == {"1", "2"}
    on_policy = {label: kd[label]["on_policy"] for label in ("student", "base")}
    assert all(entry["skipped"] is None and entry["n_sequences"] == 6 for entry in on_policy.values())
    on_student = on_policy["student"]["temperatures"]["1"]["forward_kl"]["mean"]
    assert 0 < on_student < on_policy["base"]["temperatures"]["1"]["forward_kl"]["mean"]
    manifest = record.manifest
    assert manifest["models"]["teacher"]["role"] == "teacher"
    assert manifest["schema_version"] >= 1
    assert json.loads((run_dir / "metrics.json").read_text())  # plain JSON


def test_rerun_is_served_from_cache(tmp_path: Path, scripted: dict[str, int]) -> None:
    first = read_record(run_compare(_config(tmp_path), [EchoSuite()]))
    second_dir = run_compare(
        _config(
            tmp_path,
        ),
        [EchoSuite()],
    )
    second = read_record(second_dir)
    timings = second.manifest["models"]["student"]["timings"]["suites"]
    assert timings["computed"] == 0 and timings["from_cache"] == timings["total"]
    assert first.items == second.items

    def scores(metrics: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in metrics.items() if k != "cost"}  # cost holds this run's own timings

    assert scores(first.metrics) == scores(second.metrics)
    assert second.metrics["cost"]["teacher"]["tokens_per_second"] is None  # all from cache: not timed
    assert first.metrics["cost"]["teacher"]["tokens_per_second"] > 0


def test_lower_bound_mode_is_labelled(tmp_path: Path, scripted: dict[str, int]) -> None:
    record = read_record(run_compare(_config(tmp_path, kd_mode="lower-bound", kd_top_k=8), [EchoSuite()]))
    kd = record.metrics["kd"]["student"]
    assert kd["semantics"] == "top-k+tail lower bound" and kd["top_k"] == 8
    assert 0 < kd["coverage_mean"] <= 1
    assert set(kd["temperatures"]) == {"1"}
    assert "exact" in kd["on_policy"]["skipped"]
    exact = read_record(run_compare(_config(tmp_path, kd_mode="exact"), [EchoSuite()]))
    bound = kd["temperatures"]["1"]["forward_kl"]["mean"]
    assert bound <= exact.metrics["kd"]["student"]["temperatures"]["1"]["forward_kl"]["mean"] + 1e-9


@pytest.mark.parametrize(
    ("change", "message"),
    [({"limit": 0}, "--limit 0"), ({"suites": ()}, "no suites"), ({"kd_mode": "fast"}, "--kd-mode")],
)
def test_bad_config_is_a_one_line_error(tmp_path: Path, change: dict[str, object], message: str) -> None:
    config = _config(tmp_path, **change)
    with pytest.raises(HarnessError, match=message):
        config.validate()


def test_missing_model_folder(tmp_path: Path) -> None:
    config = CompareConfig(
        teacher=parse_model_spec(f"hf:{tmp_path}/nope"), students=(parse_model_spec("mock:s"),)
    )
    with pytest.raises(HarnessError, match="does not exist"):
        config.validate()


def test_prompt_longer_than_the_context_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import models as models_module
    from harness.backends.mock import MockBackend

    monkeypatch.setattr(
        models_module, "load_backend", lambda spec, **_: MockBackend(spec.path, max_context=12)
    )
    with pytest.raises(HarnessError, match="exceeds teacher's context window of 12 tokens"):
        run_compare(_config(tmp_path), [EchoSuite()])
