"""`score_responses`, the body of `harness score`: read, load, match, score with the suites' own
scorers and `summarize_suites`, and write the metrics with their notes and the agreement with
lm-eval's logged per-sample values."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.rescore.formats import RUN_RECORD, SavedResponses, read_responses
from harness.rescore.match import Matched, match_records
from harness.rescore.selection import load_answered_suites, narrowed_to_answered
from harness.suites.base import ItemResult

if TYPE_CHECKING:
    from harness.suites.suite import LmEvalSuite


def score_responses(
    selection: str,
    responses_file: Path,
    *,
    data_dir: Path | None,
    out_dir: Path | None,
    limit: int | None = None,
    subtask: str | None = None,
    mode: str | None = None,
    model: str | None = None,
    chat_template: bool | None = None,
    seed: int | None = None,
    bootstrap: int | None = None,
) -> dict[str, Any]:
    """Re-score saved responses on `selection` (suite names as for compare, comma-separated).

    `limit`: only the first N items of each suite (records for other items are skipped, not errors).
    `subtask`/`mode` select (and, for records that do not carry them, name) the subtask and variant.
    `model`: the label of outside records (default: the file's name); for run records, the one model
    to re-score. `chat_template`: how the saved prompts were rendered, recorded in the summaries
    (scores do not depend on it). A run record's own limit, seed, bootstrap, shots, draws, chat
    template and data folder are the defaults. Returns the metrics, also written to
    OUT_DIR/metrics.json with the re-scored items in OUT_DIR/items.jsonl.
    """
    from harness.aggregate import summarize_suites

    responses = read_responses(Path(responses_file), model)
    config = responses.manifest.get("config") or {}
    lenient = limit is not None
    if limit is None and responses.format == RUN_RECORD:
        limit = config.get("limit")
    seed = seed if seed is not None else int(config.get("seed", 1234))
    bootstrap = bootstrap if bootstrap is not None else int(config.get("bootstrap", 1000))
    if chat_template is None and config.get("chat_template") is not None:
        chat_template = bool(config["chat_template"])
    if data_dir is None and config.get("data_dir") and Path(config["data_dir"]).is_dir():
        data_dir = Path(config["data_dir"])

    suites = load_answered_suites(selection, responses, subtask, mode, limit, data_dir, seed, config)
    full_size = {s.name: s.info().n_items for s in suites}
    suites = [narrowed_to_answered(s, responses.records) for s in suites]
    matched = match_records(responses.records, suites, fmt=responses.format, mode=mode, lenient=lenient)
    if not matched.responses:
        raise HarnessError(
            f"{responses.path}: no record answers an item of {selection}"
            + (f" with --mode {mode}" if mode else "")
            + (f" within --limit {limit}" if lenient else "")
        )
    models = list(dict.fromkeys(m for _, m in matched.responses))
    results = _score(suites, models, matched)
    scored = [s for s in suites if any(r.suite == s.name for r in results)]
    roles = _roles(models, responses.manifest)
    summaries = summarize_suites(scored, results, roles, seed, bootstrap)
    metrics: dict[str, Any] = {
        "suites": _as_run(summaries, scored, chat_template),
        "kd": {},
        "notes": _notes(responses, matched, full_size, results, roles),
        "rescore": {
            "responses": str(responses.path),
            "format": responses.format,
            "selection": selection,
            "records": len(responses.records),
            "scored": len(results),
            "skipped": matched.skipped,
            "models": roles,
            "limit": limit,
            "seed": seed,
            "bootstrap": bootstrap,
            "lm_eval_agreement": _agreement(matched, results),
        },
    }
    metrics = json.loads(json.dumps(metrics, default=_plain))
    if out_dir is not None:
        _write(Path(out_dir), metrics, results)
    return metrics


def _score(suites: list[LmEvalSuite], models: list[str], matched: Matched) -> list[ItemResult]:
    """Each suite's own score() on the variants answered; the saved prompts kept in the items."""
    results: list[ItemResult] = []
    for suite in suites:
        for label in models:
            answers = matched.responses.get((suite.name, label))
            if answers:
                variants = matched.variants[(suite.name, label)]
                results.extend(suite.score(label, answers, variants=variants, allow_missing=True))
    for r in results:
        r.prompt = matched.prompts.get((r.suite, r.variant, r.item_id, r.model), r.prompt)
    return results


def _as_run(
    summaries: dict[str, Any], suites: list[LmEvalSuite], chat_template: bool | None
) -> dict[str, Any]:
    """The summaries as the live run wrote them: its chat-template setting, no rows for variants no
    record answers (a file of CoT answers has no "direct" row)."""
    used = {s.name: s.spec.chat_template if chat_template is None else chat_template for s in suites}
    for name, summary in summaries.items():
        summary["variants"] = {v: cells for v, cells in summary["variants"].items() if cells}
        members = summary.get("members") or [name]
        if "chat_template" in summary and members[0] in used:
            summary["chat_template"] = used[members[0]]
    return summaries


def _write(out: Path, metrics: dict[str, Any], results: list[ItemResult]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True), encoding="utf-8")
    lines = [json.dumps(asdict(r), ensure_ascii=False, default=_plain) for r in results]
    (out / "items.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _plain(value: Any) -> Any:
    """numpy scalars (and anything else json cannot write) as plain values."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def _roles(models: list[str], manifest: Mapping[str, Any]) -> dict[str, str]:
    """A run record's own roles; else the first model is the reference ("teacher") of the summary."""
    recorded = {label: str(entry.get("role")) for label, entry in (manifest.get("models") or {}).items()}
    roles = {m: recorded.get(m, "student") for m in models}
    if "teacher" not in roles.values():
        roles[models[0]] = "teacher"
    return roles


def _notes(
    responses: SavedResponses,
    matched: Matched,
    n_items: dict[str, int],
    results: list[ItemResult],
    roles: dict[str, str],
) -> list[str]:
    notes = [f"re-scored {len(results)} items from {responses.path} ({responses.format}), no model run"]
    if responses.format != RUN_RECORD and len(roles) > 1:
        listed = ", ".join(f"{m} ({r})" for m, r in roles.items())
        notes.append(f"models: {listed}; the first is the reference")
    if matched.skipped:
        notes.append(
            f"{matched.skipped} records left out (other suites, variants, subtasks or beyond --limit)"
        )
    if matched.stop_cut:
        notes.append(
            f"{matched.stop_cut} responses contain a stop string of their task; as in a live run (where the "
            "engine stops there), only the text before it is scored"
        )
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in results:
        counts[(r.suite, r.variant, r.model)] += 1
    short = [
        f"{suite} {variant} ({m}): {n} of {n_items[suite]}"
        for (suite, variant, m), n in sorted(counts.items())
        if n < n_items[suite]
    ]
    if short:
        notes.append("items with a response (the others are left out): " + "; ".join(short))
    return notes


def _agreement(matched: Matched, results: list[ItemResult]) -> dict[str, Any]:
    """lm-eval samples carry lm-eval's own per-sample metric values: how often ours equal them."""
    out: dict[str, Any] = {}
    for r in results:
        reference = matched.reference.get((r.suite, r.variant, r.item_id, r.model)) or {}
        for key, theirs in reference.items():
            if key not in r.metrics:
                continue
            cell = (
                out.setdefault(r.suite, {})
                .setdefault(r.variant, {})
                .setdefault(key, {"n": 0, "agree": 0, "differ": []})
            )
            cell["n"] += 1
            if abs(r.metrics[key] - theirs) < 1e-9:
                cell["agree"] += 1
            elif len(cell["differ"]) < 20:
                cell["differ"].append(r.item_id)
    return out
