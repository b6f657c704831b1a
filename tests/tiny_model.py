"""Build tiny random llama models (and their BPE tokenizers) inside the test session.

Nothing is downloaded: the tokenizer is trained with `tokenizers` on generated English and
arithmetic text, the weights are a seeded random init. The folder loads in transformers and in
vLLM (head_dim 32: vLLM's CPU attention needs head_dim >= 32). Built folders are cached under a
key derived from this file's source and the build arguments, so reruns skip the build.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]

_WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "bird",
    "model",
    "teacher",
    "student",
    "learns",
    "knows",
    "answer",
    "question",
    "what",
    "is",
    "how",
    "many",
    "apples",
    "has",
    "gives",
    "takes",
    "more",
    "less",
    "than",
    "plus",
    "minus",
    "times",
    "equals",
    "number",
    "first",
    "then",
    "so",
    "total",
    "left",
    "right",
    "big",
    "small",
    "red",
    "blue",
    "green",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "day",
    "night",
    "sun",
    "moon",
    "tree",
    "river",
    "step",
    "think",
    "reason",
    "because",
    "therefore",
    "result",
    "write",
    "say",
    "word",
    "list",
    "yes",
    "no",
    "true",
    "false",
    "one",
    "two",
    "three",
]


def corpus(seed: int, n_lines: int = 3000) -> list[str]:
    """Generated training text: word salad sentences and small arithmetic facts."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        if rng.random() < 0.5:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            op = rng.choice(["+", "-", "*"])
            value = {"+": a + b, "-": a - b, "*": a * b}[op]
            lines.append(f"Question: what is {a} {op} {b}? Answer: {value}.")
        else:
            words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
            lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!"]))
    return lines


def _train_tokenizer(vocab_size: int, seed: int) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    return tok


def _save_tokenizer(tok: object, out: Path) -> int:
    from transformers import PreTrainedTokenizerFast

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(str(out))
    return len(hf_tok)


def _save_model(vocab_size: int, out: Path, seed: int, n_layers: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        # A wide init makes the next-token distributions peaked, so greedy argmaxes are not
        # near-ties that two engines could break differently.
        initializer_range=0.4,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(str(out))


def build_tiny_model(
    out: Path, *, vocab_size: int = 768, seed: int = 0, n_layers: int = 2, tokenizer_seed: int = 0
) -> Path:
    """Write a tokenizer + random llama model folder to `out` (replaced if present)."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tok = _train_tokenizer(vocab_size, tokenizer_seed)
    n_vocab = _save_tokenizer(tok, tmp)
    _save_model(n_vocab, tmp, seed, n_layers)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def cached_tiny_model(cache_root: Path, **kwargs: int) -> Path:
    """Build once per (source of this file, arguments); later calls return the cached folder."""
    key_src = Path(__file__).read_bytes() + json.dumps(kwargs, sort_keys=True).encode()
    key = hashlib.sha256(key_src).hexdigest()[:16]
    out = cache_root / f"tiny-{key}"
    if not (out / "config.json").exists():
        build_tiny_model(out, **kwargs)
    return out
