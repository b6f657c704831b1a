"""`prepare_demo`: build (once) the demo's teacher T, base B and distilled student S.

T is SmolLM2-135M-Instruct converted to float32; B is T with some decoder layers removed and no
training; S is B healed by knowledge distillation on T's temperature-softened logits over a corpus
the project generates itself. The result is cached under `out_dir`: a `demo.json` stamp records the
recipe, and a later call with the same recipe returns at once. The three models are built in a
temporary folder next to `out_dir` and moved into place before the stamp is written, so a killed
prepare never leaves a half-built model that looks done.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.demo import corpus
from harness.demo.distill import DistillConfig
from harness.errors import HarnessError

ProgressFn = Callable[[str], None]
STAMP = "demo.json"
MODELS = ("teacher", "base", "student")
RECIPE_VERSION = 1  # bump when the code changes what a recipe builds


@dataclass(frozen=True)
class DemoModels:
    """The three model folders of the demo (each loads in transformers and vLLM)."""

    teacher: Path
    base: Path
    student: Path


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that decides the demo models; all of it goes into the stamp."""

    # Chosen by measurement (see DEFAULT_RECIPE's note below).
    remove_layers: tuple[int, ...] = (20, 24)
    distill: DistillConfig = field(default_factory=DistillConfig)
    corpus_size: int = 160
    corpus_seed: int = 0
    heldout_size: int = 24
    heldout_seed: int = 1_000_003
    max_new_tokens: int = 64
    version: int = RECIPE_VERSION

    def stamp(self) -> dict[str, Any]:
        """The recipe as JSON, with the hashes of the prompts it trains and checks on."""
        d = asdict(self)
        d["remove_layers"] = list(self.remove_layers)
        train, held = corpus.split_prompts(
            self.corpus_size, self.corpus_seed, self.heldout_size, self.heldout_seed
        )
        d["corpus_prompts_hash"] = corpus.corpus_hash(train)
        d["heldout_prompts_hash"] = corpus.corpus_hash(held)
        d["corpus_namespace"] = corpus.NAMESPACE
        return d


# Measured on 24 held-out teacher answers (KL(T || model) at T = 1, top-1 agreement): removing layers
# 21 and 25 gives 0.62 / 64%, a base so close to the teacher that on the suites it retained about as
# much as the distilled student (ICL k=8 0.76 vs 0.79, IF 0.82 vs 0.76): no distillation story.
# Removing 20 and 24 gives 1.69 / 48% with mostly coherent text (a few garbled words); 30 KD steps of
# 8 sequences, training layers 19 and up, bring it to 0.27 / 79%. On the built-in suites (vLLM, greedy)
# retention base vs student: ICL k=8 0.36 vs 0.52, IF 0.41 vs 0.59; KD forward KL at T=1 1.11 vs 0.48.
# 22, 25 and 27 (1.66 / 50%) garbles more; 24-29 or every other layer is incoherent.
DEFAULT_RECIPE = DemoRecipe()


def _folders(out_dir: Path) -> DemoModels:
    return DemoModels(*(out_dir / name for name in MODELS))


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def cached(out_dir: Path, recipe: DemoRecipe = DEFAULT_RECIPE) -> DemoModels | None:
    """The models under `out_dir` if its stamp matches `recipe` and all three folders are complete."""
    stamp_path = out_dir / STAMP
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    models = _folders(out_dir)
    if stamp.get("recipe") != json.loads(json.dumps(recipe.stamp())):
        return None
    if not all(_is_model_dir(p) for p in (models.teacher, models.base, models.student)):
        return None
    return models


def prepare_demo(
    out_dir: Path,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    recipe: DemoRecipe = DEFAULT_RECIPE,
) -> DemoModels:
    """Build the demo's teacher, base and student under `out_dir`, or return the cached ones."""
    out_dir = Path(out_dir)
    say = progress or (lambda _msg: None)
    if not force and (hit := cached(out_dir, recipe)) is not None:
        say(f"demo models up to date in {out_dir}")
        return hit
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(
            f"cannot create demo folder {out_dir}: {exc}; pass a writable --out folder"
        ) from exc
    from harness.demo.convert import find_gguf

    gguf = find_gguf()  # fail early, before any heavy import, when the teacher package is missing
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
    try:
        report = _build(build, gguf, recipe, say)
        _install(build, out_dir, report, say)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return _folders(out_dir)


def _install(build: Path, out_dir: Path, report: dict[str, Any], say: ProgressFn) -> None:
    """Move the built folders into place; the stamp goes last, so only a finished build looks done."""
    with contextlib.suppress(FileNotFoundError):
        (out_dir / STAMP).unlink()
    for name in (*MODELS, "corpus.jsonl"):
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(build / name, target)
    tmp = out_dir / f".{STAMP}.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / STAMP)
    say(f"demo models ready in {out_dir}")


def _build(build: Path, gguf: Path, recipe: DemoRecipe, say: ProgressFn) -> dict[str, Any]:
    """Convert, prune, generate the corpus, distill, check and save; returns the stamp's content."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.demo import distill, prune
    from harness.demo.convert import convert_teacher

    threads = distill.set_threads()
    times: dict[str, float] = {}
    t0 = time.monotonic()
    say(f"converting the teacher from {gguf.name}")
    convert_teacher(build / "teacher", gguf)
    tokenizer = AutoTokenizer.from_pretrained(build / "teacher")
    teacher = AutoModelForCausalLM.from_pretrained(build / "teacher", dtype=torch.float32).eval()
    times["convert_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    say(f"removing layers {list(recipe.remove_layers)} to make the base")
    base = prune.remove_layers(copy.deepcopy(teacher), recipe.remove_layers)
    _save(base, tokenizer, build / "base")
    times["prune_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    say(f"generating the distillation corpus ({recipe.corpus_size} + {recipe.heldout_size} teacher answers)")
    train_prompts, held_prompts = corpus.split_prompts(
        recipe.corpus_size, recipe.corpus_seed, recipe.heldout_size, recipe.heldout_seed
    )
    texts = corpus.teacher_continuations(
        teacher, tokenizer, train_prompts + held_prompts, max_new_tokens=recipe.max_new_tokens
    )
    train_texts, held_texts = texts[: len(train_prompts)], texts[len(train_prompts) :]
    corpus.write_corpus(build / "corpus.jsonl", train_texts)
    times["corpus_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    cfg = recipe.distill
    train = distill.tokenize(tokenizer, train_texts, cfg.max_length)
    held = distill.tokenize(tokenizer, held_texts, cfg.max_length)
    pad = int(tokenizer.pad_token_id)
    student = copy.deepcopy(base)
    losses = distill.distill(teacher, student, train, pad, cfg, progress=say)
    _save(student, tokenizer, build / "student")
    times["distill_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    check = {
        name: distill.heldout_agreement(teacher, m, held, pad)
        for name, m in (("base", base), ("student", student))
    }
    times["check_s"] = time.monotonic() - t0
    say(
        "held-out KL(T||model) at T=1: base {:.3f} (top-1 {:.0%}), student {:.3f} (top-1 {:.0%})".format(
            check["base"]["kl"], check["base"]["top1"], check["student"]["kl"], check["student"]["top1"]
        )
    )
    return {
        "recipe": recipe.stamp(),
        "corpus_hash": corpus.corpus_hash(train_texts),
        "heldout_check": check,
        "losses": [round(x, 4) for x in losses],
        "timings": {k: round(v, 1) for k, v in times.items()},
        "threads": threads,
        "versions": {"torch": torch.__version__, "transformers": _transformers_version()},
    }


def _save(model: Any, tokenizer: Any, path: Path) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)
