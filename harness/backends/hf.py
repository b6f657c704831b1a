"""transformers backend: white-box (full-vocabulary logprobs, hidden states), batched.

Generation is left-padded and batched per identical sampling parameters; scoring is right-padded
in length-sorted batches bounded by `batch_size` sequences and a logits-memory budget. Only the
positions a batch scores get logits (transformers' `logits_to_keep`, where the model takes it), so
a long prompt with a short scored continuation costs no (prompt x vocabulary) logits.
Hidden states (`hidden_features`, for CKA) are returned only at the positions asked for.
Stop strings truncate the text at the first stop string and keep the tokens up to the one that
completed it, as vLLM does; a sequence that ends with EOS keeps the EOS id in `token_ids`.
"""

from __future__ import annotations

import gc
import inspect
from typing import Any

import numpy as np

from harness.backends import _common as common
from harness.backends.base import (
    Capabilities,
    Generation,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
    ScoreRequest,
    TokenScores,
)
from harness.errors import HarnessError

LOGITS_BUDGET = 1 << 27  # float32 logits elements per scoring batch (512 MiB)
# float32 attention-score elements per scoring batch (batch x heads x width^2, 256 MiB): the CPU
# attention kernels materialise them for padded batches, which made long prompts peak at GBs
ATTENTION_BUDGET = 1 << 26
HIDDEN_BUDGET = 1 << 26  # float32 hidden-state elements (all layers) per hidden_features batch (256 MiB)


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device={device!r} but no CUDA GPU is visible: use device=cpu")
    return device


class HFBackend(common.TokenizerText):
    """A causal LM loaded with transformers' AutoModelForCausalLM."""

    name = "hf"

    def __init__(self, path: str, dtype: str = "auto", device: str = "auto", batch_size: int = 16) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._model_dir = common.resolve_model_dir(path)
        self._path = path
        self._device = _pick_device(device)
        if dtype == "auto":
            dtype = "float32" if self._device == "cpu" else "bfloat16"
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise HarnessError(f"dtype={dtype!r} is not a torch dtype: use float32, bfloat16 or float16")
        if batch_size < 1:
            raise HarnessError(f"batch_size={batch_size}: must be >= 1")
        self._batch_size = batch_size
        self._tok = AutoTokenizer.from_pretrained(str(self._model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(self._model_dir), dtype=getattr(torch, dtype))
        self._model: Any = model.to(self._device).eval()  # type: ignore[arg-type]
        self._dtype = dtype
        self._vocab = int(model.get_output_embeddings().weight.shape[0])
        self._pad_id = (
            self._tok.pad_token_id if self._tok.pad_token_id is not None else self._tok.eos_token_id
        )
        self._eos = self._eos_ids()
        self._info: ModelInfo | None = None
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    def _eos_ids(self) -> list[int]:
        ids = self._model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self._tok.eos_token_id is not None and self._tok.eos_token_id not in ids:
            ids.append(self._tok.eos_token_id)
        return [int(i) for i in ids]

    # ---- identity -------------------------------------------------------------------------
    def info(self) -> ModelInfo:
        if self._info is None:
            fp, method = common.fingerprint(self._model_dir)
            self._info = ModelInfo(
                backend=self.name,
                model_id=self._path,
                fingerprint=fp,
                tokenizer_id=common.tokenizer_id(self._tok),
                vocab_size=self._vocab,
                max_context=common.max_context_from_config(self._model_dir),
                chat_template=getattr(self._tok, "chat_template", None),
                n_parameters=int(sum(p.numel() for p in self._model.parameters())),
                dtype=self._dtype,
                extra={"fingerprint_method": method, "device": self._device},
            )
        return self._info

    def capabilities(self) -> Capabilities:
        return Capabilities(
            full_vocab_logprobs=True,
            max_top_k=self._vocab,
            hidden_states=True,
            chat_template=bool(getattr(self._tok, "chat_template", None)),
            target_token_logprobs=True,
        )

    # ---- text -----------------------------------------------------------------------------
    def _check_len(self, n: int, what: str) -> None:
        limit = self.info().max_context
        if n > limit:
            raise HarnessError(
                f"{what} needs {n} tokens, more than the context window {limit} of {self._path}: shorten it"
            )

    # ---- generation -----------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        common.check_max_tokens(requests)
        prompts = self.tokenize([r.prompt for r in requests])
        out: list[Generation | None] = [None] * len(requests)
        for params, idx in common.group_by_params(requests).items():
            for i in idx:
                self._check_len(len(prompts[i]) + params.max_tokens, "prompt + max_tokens")
            # Sampling runs one request per batch so a seed gives the same text whatever the batch.
            size = self._batch_size if params.temperature <= 0 else 1
            for b in range(0, len(idx), size):
                chunk = idx[b : b + size]
                for i, g in zip(
                    chunk, self._generate_batch([prompts[i] for i in chunk], params), strict=True
                ):
                    out[i] = g
        return [g for g in out if g is not None]

    def _generate_batch(self, prompts: list[list[int]], p: SamplingParams) -> list[Generation]:
        import torch
        from transformers import StoppingCriteriaList

        width = max(len(x) for x in prompts)
        ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, x in enumerate(prompts):
            ids[row, width - len(x) :] = torch.tensor(x)
            mask[row, width - len(x) :] = 1
        stopping = StoppingCriteriaList([_StopStrings(self._tok, p.stop, width)] if p.stop else [])
        sample = p.temperature > 0
        knobs = {"temperature": p.temperature, "top_p": p.top_p, "top_k": 0} if sample else {}
        torch.manual_seed(p.seed)
        with torch.inference_mode():
            res = self._model.generate(
                input_ids=ids.to(self._device),
                attention_mask=mask.to(self._device),
                max_new_tokens=p.max_tokens,
                do_sample=sample,
                **knobs,
                stopping_criteria=stopping,
                pad_token_id=self._pad_id,
                eos_token_id=self._eos,
                output_logits=bool(p.top_logprobs),
                return_dict_in_generate=True,
            )
        new = res.sequences[:, width:].cpu().tolist()
        logits = torch.stack(res.logits, dim=1).float() if p.top_logprobs else None
        return [self._finish(row, new[row], p, logits) for row in range(len(prompts))]

    def _finish(self, row: int, new: list[int], p: SamplingParams, logits: Any) -> Generation:
        """Cut one generated row at EOS or the first stop string; attach top-k logprobs."""
        import torch

        reason = "length"
        for j, t in enumerate(new):
            if t in self._eos:
                new, reason = new[: j + 1], "stop"
                break
        if common.stop_cut(self.detokenize(new), p.stop) >= 0:
            n = 1
            while common.stop_cut(self.detokenize(new[:n]), p.stop) < 0:
                n += 1
            new, reason = new[:n], "stop"
        text = common.final_text(self.detokenize, new, p.stop)
        top = None
        if logits is not None:
            lp = torch.log_softmax(logits[row, : len(new)], dim=-1)
            vals, idx = lp.topk(p.top_logprobs, dim=-1)
            top = tuple(
                tuple((int(t), float(v)) for t, v in zip(i, v_, strict=True))
                for i, v_ in zip(idx.tolist(), vals.tolist(), strict=True)
            )
        return Generation(text=text, token_ids=tuple(new), finish_reason=reason, top_logprobs=top)

    # ---- scoring --------------------------------------------------------------------------
    def score_tokens(self, requests: list[ScoreRequest]) -> list[TokenScores]:
        for r in requests:
            common.validate_score_request(r, self._vocab)
            self._check_len(len(r.token_ids), "scored sequence")
        out: list[TokenScores | None] = [None] * len(requests)
        spans = [(r.start - 1, len(r.token_ids) - 1) for r in requests]
        for batch in self._span_batches(spans):
            for i, s in zip(batch, self._score_batch([requests[i] for i in batch]), strict=True):
                out[i] = s
        return [s for s in out if s is not None]

    def _span_batches(self, spans: list[tuple[int, int]]) -> list[list[int]]:
        """Indices sorted by length (longest first), cut so batch x logits width x vocab fits LOGITS_BUDGET
        and batch x heads x length^2 fits ATTENTION_BUDGET.

        The logits width of a batch is the union of its rows' scored spans [lo, hi) when the model keeps
        only those logits, else its longest row."""
        heads = int(getattr(self._model.config.get_text_config(), "num_attention_heads", 1) or 1)
        order = sorted(range(len(spans)), key=lambda i: (-spans[i][1], -spans[i][0]))
        batches: list[list[int]] = []
        for i in order:
            cur = batches[-1] if batches else None
            if cur and len(cur) < self._batch_size:
                rows = [spans[j] for j in cur] + [spans[i]]
                width = max(h for _, h in rows) - (min(lo for lo, _ in rows) if self._keeps_logits else 0)
                length = max(h for _, h in rows) + 1
                if (
                    len(rows) * width * self._vocab <= LOGITS_BUDGET
                    and len(rows) * heads * length * length <= ATTENTION_BUDGET
                ):
                    cur.append(i)
                    continue
            batches.append([i])
        return batches

    def _padded(self, seqs: list[tuple[int, ...]]) -> tuple[Any, Any]:
        """(ids, attention mask) of right-padded sequences, on the model's device."""
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        return ids.to(self._device), mask.to(self._device)

    def _forward_logprobs(self, seqs: list[tuple[int, ...]], lo: int = 0) -> Any:
        """(batch, width - lo, vocab) float32 log_softmax of right-padded sequences from position lo on
        (position lo of the result is position `lo` of the sequences; 0 when the model keeps every logit)."""
        import torch

        ids, mask = self._padded(seqs)
        keep = {"logits_to_keep": torch.arange(lo, ids.shape[1], device=ids.device)} if lo else {}
        with torch.inference_mode():
            logits = self._model(input_ids=ids, attention_mask=mask, **keep).logits
            return torch.log_softmax(logits.float(), dim=-1)

    def _score_batch(self, reqs: list[ScoreRequest]) -> list[TokenScores]:
        import torch

        lo = min(r.start - 1 for r in reqs) if self._keeps_logits else 0
        lp_all = self._forward_logprobs([r.token_ids for r in reqs], lo)
        out = []
        for row, r in enumerate(reqs):
            lp = lp_all[row, r.start - 1 - lo : len(r.token_ids) - 1 - lo]
            actual = torch.tensor(r.token_ids[r.start :], device=lp.device)
            vals, idx = lp.topk(r.top_k, dim=-1) if r.top_k else (lp[:, :0], lp[:, :0].long())
            s = TokenScores(
                token_logprobs=lp.gather(1, actual[:, None])[:, 0].cpu().numpy(),
                topk_ids=idx.cpu().numpy().astype(np.int64),
                topk_logprobs=vals.cpu().numpy(),
                full_logprobs=lp.cpu().numpy() if r.full_vocab else None,
            )
            if r.target_ids is not None:
                t = torch.from_numpy(common.target_matrix(r.target_ids)).to(lp.device)
                picked = lp.gather(1, t.clamp_min(0))
                s.target_logprobs = torch.where(t >= 0, picked, -torch.inf).cpu().numpy()
            out.append(s)
        return out

    def hidden_states(self, token_ids_batch: list[list[int]], layers: list[int]) -> list[np.ndarray]:
        """Per sequence, a (len(layers), n_tokens, hidden) float32 array; layer 0 is the embeddings."""
        import torch

        out = []
        for seq in token_ids_batch:
            ids = torch.tensor([seq], device=self._device)
            with torch.inference_mode():
                hs = self._model(input_ids=ids, output_hidden_states=True).hidden_states
            out.append(torch.stack([hs[i][0] for i in layers]).float().cpu().numpy())
        return out

    def n_hidden_layers(self) -> tuple[int, int]:
        """(number of hidden-state arrays hidden_features returns per position = layers + 1, hidden size)."""
        config = self._model.config.get_text_config()
        return int(config.num_hidden_layers) + 1, int(config.hidden_size)

    def hidden_features(self, sequences: list[tuple[int, ...]], positions: list[np.ndarray]) -> np.ndarray:
        """Every layer's hidden state at the given positions of each sequence, in sequence order.

        Returns (layers + 1, total positions, hidden) float32: index 0 is the embeddings, the last is
        the final layer as transformers returns it (after the final norm for most models). Sequences
        run right-padded in length-sorted batches bounded by HIDDEN_BUDGET (causal attention: padding
        on the right changes no earlier position); only the kept positions are copied out.
        """
        import torch

        if len(positions) != len(sequences):
            raise HarnessError(
                f"{len(positions)} position lists for {len(sequences)} sequences: pass one each"
            )
        for seq, pos in zip(sequences, positions, strict=True):
            self._check_len(len(seq), "sequence for hidden states")
            if len(pos) and (int(np.min(pos)) < 0 or int(np.max(pos)) >= len(seq)):
                raise HarnessError(f"hidden-state positions fall outside a sequence of {len(seq)} tokens")
        n_layers, hidden = self.n_hidden_layers()
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in positions])]).astype(int)
        out = np.empty((n_layers, int(offsets[-1]), hidden), dtype=np.float32)
        wanted = [i for i, p in enumerate(positions) if len(p)]
        order = sorted(wanted, key=lambda i: -len(sequences[i]))
        per_row = max(1, HIDDEN_BUDGET // (n_layers * hidden))  # token positions per batch
        b = 0
        while b < len(order):
            rows = max(1, min(self._batch_size, per_row // max(1, len(sequences[order[b]]))))
            batch = order[b : b + rows]
            b += len(batch)
            ids, mask = self._padded([sequences[i] for i in batch])
            keep = {"logits_to_keep": 1} if self._keeps_logits else {}
            with torch.inference_mode():
                states = self._model(
                    input_ids=ids, attention_mask=mask, output_hidden_states=True, **keep
                ).hidden_states
                for row, i in enumerate(batch):
                    index = torch.as_tensor(np.asarray(positions[i], dtype=np.int64), device=ids.device)
                    picked = torch.stack([layer[row].index_select(0, index) for layer in states])
                    out[:, offsets[i] : offsets[i + 1]] = picked.float().cpu().numpy()
        return out

    def close(self) -> None:
        import torch

        self._model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class _StopStrings:
    """Stopping criterion: a row is done once its generated text contains a stop string."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], prompt_width: int) -> None:
        self.tok, self.stops, self.width = tokenizer, stops, prompt_width

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        texts = self.tok.batch_decode(input_ids[:, self.width :], skip_special_tokens=True)
        return torch.tensor([common.stop_cut(t, self.stops) >= 0 for t in texts], device=input_ids.device)
