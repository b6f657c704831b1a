"""Seeded generators for the data of the four built-in suites (written by this project).

`python -m harness.suites.generators [TASKS_DIR]` rewrites tasks/*/data/*.jsonl; a unit test
regenerates into a temporary folder and compares byte for byte. The items are calibrated to
the demo teacher (SmolLM2-135M-Instruct): easy enough that it scores well above chance.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEED = 20261124

# -- ICL: antonyms ("hot -> cold"), answers first; a second answer is also accepted --------------
ANTONYMS = """hot cold|big small,little|up down|day night|happy sad|fast slow|open closed,shut|high low|
left right|black white|early late|rich poor|full empty|wet dry|strong weak|long short|thick thin|push pull|
win lose|buy sell|love hate|true false|first last|above below|inside outside|give take|clean dirty|
cheap expensive|loud quiet|question answer|north south|east west|good bad|near far|alive dead|friend enemy|
always never|before after|top bottom|front back|come go|laugh cry|safe dangerous|awake asleep|boy girl|
king queen|man woman|brother sister|father mother|son daughter|in out|on off|yes no|hard soft,easy|
heavy light|young old|new old|tall short|fat thin|deep shallow|wide narrow|sharp dull|sweet sour,bitter|
smooth rough|increase decrease|arrive leave,depart|accept refuse,reject|remember forget|simple complex|
happy unhappy,sad|lost found|polite rude|brave afraid,cowardly|noisy quiet|sunny cloudy,rainy|summer winter|
morning evening,night|asleep awake|dark light,bright|entrance exit|import export|maximum minimum|
major minor|ancient modern|private public|positive negative|visible invisible|possible impossible|
correct incorrect,wrong|legal illegal|known unknown|happiness sadness|success failure|victory defeat|
war peace|friendly unfriendly,hostile|inner outer|upper lower|
start finish,end|begin end|empty full|tight loose|wild tame|raw cooked|cold hot|small big,large"""


def antonym_pairs() -> list[tuple[str, list[str]]]:
    pairs: dict[str, list[str]] = {}
    for chunk in ANTONYMS.replace("\n", "").split("|"):
        word, answers = chunk.split()
        pairs.setdefault(word, answers.split(","))  # a word listed twice keeps its first answers
    return list(pairs.items())


def icl_data(seed: int = SEED, n_test: int = 48) -> dict[str, list[dict[str, Any]]]:
    """A test split scored at each shot count, and a disjoint few-shot pool (train)."""
    pairs = antonym_pairs()
    random.Random(seed).shuffle(pairs)
    rows = [{"id": f"ant-{i:03d}", "word": w, "answers": a} for i, (w, a) in enumerate(pairs)]
    return {"test": rows[:n_test], "train": rows[n_test:]}


# -- CoT: one-step word problems with small numbers ------------------------------------------------
NAMES = [
    "Tom",
    "Anna",
    "Ben",
    "Mia",
    "Sam",
    "Lily",
    "Max",
    "Emma",
    "Leo",
    "Zoe",
    "Jack",
    "Ella",
    "Noah",
    "Ava",
]
OBJECTS = [
    "apples",
    "books",
    "pens",
    "cookies",
    "balls",
    "cards",
    "stickers",
    "marbles",
    "toys",
    "eggs",
    "shells",
]


def _add(rng: random.Random, name: str, obj: str) -> tuple[str, str, int]:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return (
        f"{name} has {a} {obj}. {name} gets {b} more {obj}. How many {obj} does {name} have now?",
        f"{name} starts with {a} {obj} and gets {b} more, so {a} + {b} = {a + b}.",
        a + b,
    )


def _sub(rng: random.Random, name: str, obj: str) -> tuple[str, str, int]:
    a = rng.randint(6, 15)
    b = rng.randint(2, a - 1)
    return (
        f"{name} has {a} {obj}. {name} gives {b} {obj} to a friend. How many {obj} does {name} have left?",
        f"{name} starts with {a} {obj} and gives away {b}, so {a} - {b} = {a - b}.",
        a - b,
    )


def _mul(rng: random.Random, name: str, obj: str) -> tuple[str, str, int]:
    a, b = rng.randint(2, 5), rng.randint(2, 5)
    return (
        f"{name} has {a} boxes. Each box holds {b} {obj}. How many {obj} does {name} have?",
        f"There are {a} boxes with {b} {obj} each, so {a} * {b} = {a * b}.",
        a * b,
    )


PROBLEM_KINDS: dict[str, Callable[[random.Random, str, str], tuple[str, str, int]]] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
}


def _problem(rng: random.Random, kind: str, ident: str) -> dict[str, Any]:
    question, reasoning, answer = PROBLEM_KINDS[kind](rng, rng.choice(NAMES), rng.choice(OBJECTS))
    return {"id": ident, "kind": kind, "question": question, "reasoning": reasoning, "answer": str(answer)}


def cot_data(seed: int = SEED, n_test: int = 36) -> dict[str, list[dict[str, Any]]]:
    """Test problems (add, sub, mul in turn) and four exemplars; the direct prompt shows the same
    exemplar questions with answer-only targets."""
    rng = random.Random(seed)
    kinds = list(PROBLEM_KINDS)
    exemplars = [_problem(rng, kind, f"ex-{i}") for i, kind in enumerate(["add", "sub", "mul", "add"])]
    seen = {row["question"] for row in exemplars}
    test: list[dict[str, Any]] = []
    while len(test) < n_test:
        row = _problem(rng, kinds[len(test) % len(kinds)], f"wp-{len(test):03d}")
        if row["question"] not in seen:
            seen.add(row["question"])
            test.append(row)
    return {"test": test, "train": exemplars}


# -- IF: IFEval-format prompts with verifiable instructions ------------------------------------------
TOPICS = {
    "the ocean": "water",
    "a rainy day": "umbrella",
    "your favorite food": "tasty",
    "a cat": "fur",
    "the moon": "night",
    "a busy city": "street",
    "a summer holiday": "beach",
    "a good friend": "kind",
    "a birthday party": "cake",
    "the forest": "trees",
    "a train trip": "window",
    "learning to swim": "pool",
}
REQUESTS = [
    "Write a short paragraph about {t}.",
    "Describe {t} in a few sentences.",
    "Write a few sentences about {t}.",
    "Tell me about {t}.",
]


def _instruction(kind: str, keyword: str) -> tuple[str, dict[str, Any]]:
    """(sentence added to the prompt, IFEval kwargs) for one lm-eval IFEval instruction id."""
    table: dict[str, tuple[str, dict[str, Any]]] = {
        "length_constraints:number_sentences": (
            "Your response should contain less than 4 sentences.",
            {"num_sentences": 4, "relation": "less than"},
        ),
        "length_constraints:number_words": (
            "Answer with less than 60 words.",
            {"num_words": 60, "relation": "less than"},
        ),
        "detectable_format:title": (
            "Your answer must contain a title, wrapped in double angular brackets, such as <<my title>>.",
            {},
        ),
        "keywords:forbidden_words": (
            f'Do not include the word "{keyword}" in the response.',
            {"forbidden_words": [keyword]},
        ),
        "detectable_content:postscript": (
            "At the end of your response, please explicitly add a postscript starting with P.S.",
            {"postscript_marker": "P.S."},
        ),
        "keywords:existence": (f'Include the keyword "{keyword}" in your response.', {"keywords": [keyword]}),
        "punctuation:no_comma": ("In your entire response, refrain from the use of any commas.", {}),
        "detectable_format:number_bullet_lists": (
            "Your answer must contain exactly 3 bullet points. Use the "
            "markdown bullet points such as:\n* This is point 1.",
            {"num_bullets": 3},
        ),
        "startend:end_checker": (
            'Finish your response with this exact phrase: "Have a nice day." No other words '
            "should follow this phrase.",
            {"end_phrase": "Have a nice day."},
        ),
        "change_case:english_lowercase": (
            "Your entire response should be in English, and in all lowercase "
            "letters. No capital letters are allowed.",
            {},
        ),
    }
    return table[kind]


IF_KINDS = [
    "length_constraints:number_sentences",
    "length_constraints:number_words",
    "detectable_format:title",
    "keywords:forbidden_words",
    "detectable_content:postscript",
    "keywords:existence",
    "punctuation:no_comma",
    "detectable_format:number_bullet_lists",
    "startend:end_checker",
    "change_case:english_lowercase",
]


def if_data(
    seed: int = SEED, n_test: int = 32, kinds: list[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Each prompt: a short writing request plus one instruction (every fourth prompt: two)."""
    rng = random.Random(seed)
    kinds = kinds or IF_KINDS
    rows = []
    for i in range(n_test):
        topic = rng.choice(sorted(TOPICS))
        chosen = [kinds[i % len(kinds)]]
        if i % 4 == 3:
            chosen.append(rng.choice([k for k in kinds if k.split(":")[0] != chosen[0].split(":")[0]]))
        parts = [_instruction(kind, TOPICS[topic]) for kind in chosen]
        prompt = " ".join([rng.choice(REQUESTS).format(t=topic), *(text for text, _ in parts)])
        rows.append(
            {
                "key": 1000 + i,
                "prompt": prompt,
                "instruction_id_list": chosen,
                "kwargs": [kw for _, kw in parts],
            }
        )
    return {"test": rows}


# -- MC: four-choice questions with one verifiable answer, scored by log-likelihood -----------------
CATEGORIES = {
    "a fruit": ["apple", "banana", "grape", "pear", "mango", "strawberry", "pineapple", "melon"],
    "an animal": ["dog", "cat", "horse", "cow", "lion", "tiger", "rabbit", "sheep"],
    "a color": ["red", "blue", "green", "yellow", "purple", "pink", "brown", "gray"],
    "a vehicle": ["car", "bus", "truck", "train", "bicycle", "boat", "airplane", "motorcycle"],
    "a piece of furniture": ["chair", "table", "bed", "sofa", "desk", "shelf", "cupboard", "stool"],
    "a part of the body": ["hand", "foot", "nose", "ear", "arm", "leg", "knee", "elbow"],
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September"]
MONTHS += ["October", "November", "December"]
MC_KINDS = ("category", "opposite", "next", "sum")


def _mc_category(rng: random.Random, index: int) -> tuple[str, str, list[str]]:
    names = sorted(CATEGORIES)
    name = names[index % len(names)]
    others = [w for other in names if other != name for w in CATEGORIES[other]]
    return f"Which word names {name}?", rng.choice(CATEGORIES[name]), rng.sample(others, 3)


def _mc_opposite(rng: random.Random, index: int) -> tuple[str, str, list[str]]:
    pairs = antonym_pairs()
    word, answers = pairs[rng.randrange(len(pairs))]
    pool = sorted({a[0] for w, a in pairs if w != word and a[0] not in answers and a[0] != word})
    return f"What is the opposite of {word}?", answers[0], rng.sample(pool, 3)


def _mc_next(rng: random.Random, index: int) -> tuple[str, str, list[str]]:
    what, names = ("day", DAYS) if rng.random() < 0.4 else ("month", MONTHS)
    i = rng.randrange(len(names))
    answer = names[(i + 1) % len(names)]
    pool = [n for n in names if n not in (answer, names[i])]
    return f"Which {what} comes after {names[i]}?", answer, rng.sample(pool, 3)


def _mc_sum(rng: random.Random, index: int) -> tuple[str, str, list[str]]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    pool = [str(n) for n in range(2, 19) if n != a + b]
    return f"What is {a} plus {b}?", str(a + b), rng.sample(pool, 3)


MC_MAKERS: dict[str, Callable[[random.Random, int], tuple[str, str, list[str]]]] = {
    "category": _mc_category,
    "opposite": _mc_opposite,
    "next": _mc_next,
    "sum": _mc_sum,
}


def mc_data(seed: int = SEED, n_test: int = 48, n_train: int = 16) -> dict[str, list[dict[str, Any]]]:
    """Test questions and a disjoint few-shot pool, the four kinds in turn; the gold choice sits at
    each of the four places equally often (seeded order), so always picking one place scores 25%."""
    rng = random.Random(seed + 4)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()  # question and answer: a category question recurs with other words
    n = n_test + n_train
    places: list[int] = []
    for size in (n_test, n_train):
        block = [i % 4 for i in range(size)]
        rng.shuffle(block)
        places += block
    for _ in range(100 * n):
        if len(rows) == n:
            break
        kind = MC_KINDS[len(rows) % len(MC_KINDS)]
        question, answer, wrong = MC_MAKERS[kind](rng, len(rows) // len(MC_KINDS))
        if f"{question} {answer}" in seen:
            continue
        seen.add(f"{question} {answer}")
        label = places[len(rows)]
        choices = wrong[:label] + [answer] + wrong[label:]
        split = "test" if len(rows) < n_test else "train"
        ident = f"mc-{len(rows):03d}" if split == "test" else f"mc-ex-{len(rows) - n_test:02d}"
        rows.append({"id": ident, "kind": kind, "question": question, "choices": choices, "label": label})
    if len(rows) < n:
        raise ValueError(f"only {len(rows)} distinct questions for {n} items: lower n_test or n_train")
    return {"test": rows[:n_test], "train": rows[n_test:]}


GENERATORS: dict[str, Callable[[], dict[str, list[dict[str, Any]]]]] = {
    "icl-basic": icl_data,
    "cot-basic": cot_data,
    "if-basic": if_data,
    "mc-basic": mc_data,
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def write_all(tasks_root: Path) -> list[Path]:
    """Write every built-in suite's data as tasks_root/<suite>/data/<split>.jsonl; returns the files."""
    written = []
    for suite, generate in GENERATORS.items():
        for split, rows in generate().items():
            path = tasks_root / suite / "data" / f"{split}.jsonl"
            write_jsonl(path, rows)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from harness.suites.spec import tasks_dir

    root = Path(args[0]) if args else tasks_dir()
    for path in write_all(root):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
