"""Our scores equal lm-eval's own evaluator on the same task, prompts and (scripted) responses."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness.suites import ensure_punkt, load_suite
from harness.suites.base import Response
from harness.suites.suite import LmEvalSuite


def scripted_text(prompt: str, gold: str) -> str:
    """A deterministic 'model': right on about half the prompts, in varied shapes."""
    digest = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
    return [f" {gold}", f" So 1 + 1 = {gold}", " banana", f" The answer is {gold}.", ""][digest % 5]


def lmeval_scores(suite: LmEvalSuite, variant: str, texts: dict[str, str]) -> dict[str, float]:
    """Run lm-eval's simple_evaluate with an LM that answers from `texts` (keyed by prompt)."""
    from lm_eval import simple_evaluate
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    class Scripted(LM):  # type: ignore[misc]
        def generate_until(self, requests, disable_tqdm: bool = False):  # noqa: ANN001
            return [texts[r.args[0]] for r in requests]

        def loglikelihood(self, requests, disable_tqdm: bool = False):  # noqa: ANN001
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):  # noqa: ANN001
            raise NotImplementedError

    v = next(x for x in suite.variants if x.name == variant)
    task = suite.tasks[v.task_key]
    out = simple_evaluate(
        model=Scripted(),
        task_manager=TaskManager(include_defaults=False),
        tasks=[task],
        num_fewshot=v.num_fewshot,
        limit=suite.limit,
        fewshot_random_seed=suite.seed,
        bootstrap_iters=0,
        log_samples=False,
    )
    metrics = out["results"][task.config.task]
    return {k: float(val) for k, val in metrics.items() if "," in k and "stderr" not in k}


@pytest.mark.parametrize(
    ("name", "variant"),
    [("icl-basic", "k=2"), ("cot-basic", "cot"), ("cot-basic", "direct"), ("if-basic", "default")],
)
def test_scores_equal_lm_evals_evaluator(name: str, variant: str, tmp_path: Path) -> None:
    ensure_punkt(tmp_path)
    suite = load_suite(name, limit=12, chat_template=False)
    probe = suite.score("probe", {r: Response(text="") for i in suite.item_requests() for r in i.requests})
    gold = {r.prompt: r.target.split(" | ")[0] for r in probe}
    texts = {p: scripted_text(p, g) for p, g in gold.items()}
    ours = suite.aggregate(
        suite.score(
            "m", {r: Response(text=texts[r.prompt]) for i in suite.item_requests() for r in i.requests}
        )
    )[variant]
    theirs = lmeval_scores(suite, variant, texts)
    assert set(ours) == set(theirs)
    for key, value in ours.items():
        assert value == pytest.approx(theirs[key]), key
    assert 0.0 < ours[suite.spec.primary_metric] < 1.0  # a mixed script, so the comparison can fail
