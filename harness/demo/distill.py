"""Knowledge distillation on the teacher's temperature-softened logits (Hinton et al., 2015).

Loss per token: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the non-padding tokens
of a batch. The T^2 factor keeps the gradient scale independent of T. The teacher runs in eval mode
without gradients; the student trains with AdamW. Everything is seeded and the data order is a
pure function of the seed, so the same recipe gives the same student on the same machine.

For speed on a CPU the student can keep its lowest layers and its (tied) embeddings frozen
(`train_from`): depth pruning damages the layers around the cut, and the gradient then stops at the
first trainable layer instead of flowing through the whole network.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class DistillConfig:
    """The training recipe; every field goes into the demo stamp."""

    steps: int = 30
    batch_size: int = 8
    lr: float = 3e-4
    temperature: float = 2.0
    seed: int = 0
    max_length: int = 128
    train_from: int = 19  # layers below this index (and the embeddings) stay frozen
    warmup: int = 5


def kd_loss(student_logits: Any, teacher_logits: Any, temperature: float, mask: Any = None) -> Any:
    """T^2 * KL(p_t || p_s) with p = softmax(z / T), mean over the positions where `mask` is true.

    Logits have shape (..., vocab); `mask` has the leading shape (padding positions are False).
    """
    import torch.nn.functional as F

    t = float(temperature)
    s_logp = F.log_softmax(student_logits.float() / t, dim=-1)
    t_logp = F.log_softmax(teacher_logits.float() / t, dim=-1)
    per_pos = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
    if mask is None:
        return per_pos.mean() * t * t
    m = mask.to(per_pos.dtype)
    return (per_pos * m).sum() / m.sum().clamp_min(1.0) * t * t


def set_threads() -> int:
    """Use every core this process may run on (2 on the dev machines)."""
    import torch

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    return n


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, truncated; the chat markup is already in the text."""
    out = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)
    return [list(ids) for ids in out["input_ids"]]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """Right-padded ids and a boolean mask of real tokens.

    Right padding needs no attention mask under causal attention: real tokens never see the pads
    that come after them, and pads are masked out of every loss and metric.
    """
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = True
    return ids, mask


def masked_logits(model: Any, ids: Any, mask: Any) -> Any:
    """Logits only at real-token positions, shape (n_tokens, vocab): the LM head skips the pads."""
    hidden = model.model(input_ids=ids).last_hidden_state
    return model.lm_head(hidden[mask])


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Deterministic batches: reshuffle with `seed` at each pass over the data."""
    r = random.Random(seed)
    order: list[int] = []
    batches: list[list[int]] = []
    while len(batches) < steps:
        if len(order) < batch_size:
            perm = list(range(n))
            r.shuffle(perm)
            order.extend(perm)
        batches.append(order[:batch_size])
        order = order[batch_size:]
    return batches


def _freeze(student: Any, train_from: int) -> list[Any]:
    for p in student.parameters():
        p.requires_grad_(False)
    for layer in student.model.layers[train_from:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    for p in student.model.norm.parameters():
        p.requires_grad_(True)
    return [p for p in student.parameters() if p.requires_grad]


def _lr_at(step: int, cfg: DistillConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def distill(
    teacher: Any,
    student: Any,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    cfg: DistillConfig,
    progress: ProgressFn | None = None,
) -> list[float]:
    """Train `student` in place on the teacher's soft targets; returns the loss of every step."""
    import torch

    torch.manual_seed(cfg.seed)
    teacher.eval()
    student.train()
    params = _freeze(student, cfg.train_from)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    losses: list[float] = []
    started = time.monotonic()
    for step, idx in enumerate(batch_order(len(sequences), cfg.batch_size, cfg.steps, cfg.seed)):
        ids, mask = pad_batch([sequences[i] for i in idx], pad_id)
        with torch.no_grad():
            t_logits = masked_logits(teacher, ids, mask)
        loss = kd_loss(masked_logits(student, ids, mask), t_logits, cfg.temperature)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None and (step % 5 == 0 or step == cfg.steps - 1):
            elapsed = time.monotonic() - started
            progress(f"distill step {step + 1}/{cfg.steps} loss {losses[-1]:.3f} ({elapsed:.0f}s)")
    student.eval()
    for p in student.parameters():
        p.requires_grad_(True)
    return losses


def heldout_agreement(
    teacher: Any, model: Any, sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int = 8
) -> dict[str, float]:
    """Per-token KL(teacher || model) at T = 1 and top-1 agreement, teacher forcing on held-out text."""
    import torch
    import torch.nn.functional as F

    kl_sum, agree, n = 0.0, 0, 0
    with torch.inference_mode():
        for start in range(0, len(sequences), batch_size):
            ids, mask = pad_batch(sequences[start : start + batch_size], pad_id)
            t = F.log_softmax(masked_logits(teacher, ids, mask).float(), dim=-1)
            s = F.log_softmax(masked_logits(model, ids, mask).float(), dim=-1)
            kl_sum += float((t.exp() * (t - s)).sum())
            agree += int((t.argmax(-1) == s.argmax(-1)).sum())
            n += int(mask.sum())
    return {"kl": kl_sum / max(n, 1), "top1": agree / max(n, 1), "tokens": float(n)}
