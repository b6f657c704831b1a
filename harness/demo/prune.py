"""Depth pruning: remove whole decoder layers from a causal LM (the "base" of the demo).

Works on Llama-style models from transformers (`model.model.layers`), which covers the demo teacher.
The config is kept consistent with the remaining layers so that the saved folder loads anywhere
(transformers and vLLM): `num_hidden_layers`, each attention's `layer_idx` (the KV-cache slot), and
`layer_types` when the config has one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def _layers(model: Any) -> Any:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise HarnessError(
            f"cannot prune {type(model).__name__}: no `model.layers` list "
            "(only Llama-style decoders are supported)"
        )
    return layers


def remove_layers(model: Any, remove: Iterable[int]) -> Any:
    """Delete the decoder layers at the given indices in place and fix the config; returns the model."""
    import torch

    layers = _layers(model)
    n = len(layers)
    drop = sorted(set(remove))
    bad = [i for i in drop if not 0 <= i < n]
    if bad:
        raise HarnessError(f"cannot remove layers {bad}: the model has layers 0..{n - 1}")
    if len(drop) >= n:
        raise HarnessError(f"cannot remove all {n} layers: keep at least one")
    keep = [i for i in range(n) if i not in set(drop)]
    model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(model.model.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    cfg = model.config
    cfg.num_hidden_layers = len(keep)
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None:
        cfg.layer_types = [layer_types[i] for i in keep]
    return model


def prune_model_dir(src: Path, dst: Path, remove: Iterable[int]) -> Path:
    """Load the model folder `src`, remove layers, save model and tokenizer to `dst` (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    remove_layers(model, remove)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst
