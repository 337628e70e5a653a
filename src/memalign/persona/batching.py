"""Run many prompts that share a prefix: encode each context once, then continue it cheaply many times.

Why: questionnaire prompts are ~90 tokens of which only the last is where a steering with the
``generated`` positions policy acts, and PAS needs each item scored under several strengths, folds and
head sets, plus the agree/disagree capture forwards. Encoding the contexts once (unsteered) and then
running only the final token(s) on top of their KV cache turns minutes of CPU time into seconds.

Layout of one batch (B rows)::

    [ shared prefix (P tokens, encoded once, batch 1) | left padding | row context | continuation ]

The padding sits *inside* the sequence, so it is excluded with the 2-D attention mask and the positions
are given explicitly (prefix 0..P-1, then each row's own tokens consecutively): every row sees exactly
the tokens it would see alone. Continuations have the same length in every row, so the last position
(-1) is each row's read position, which is also what the ``generated`` steering policy relies on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, PreTrainedModel

from memalign.errors import ConfigError, DataError
from memalign.models.logits import final_logit_softcap, soft_cap
from memalign.progress import progress_bar
from memalign.text import common_prefix_length

BANK_FORMAT = "memalign.context_bank/1"


@dataclass
class _Batch:
    keys: list[torch.Tensor]  # per layer, (B, kv_heads, M, head_dim)
    values: list[torch.Tensor]
    mask: torch.Tensor  # (B, P + M) long: 1 on real tokens
    next_position: torch.Tensor  # (B,) position id of each row's next token
    start: int  # index of the first row in the bank


class ContextBank:
    """KV caches of a list of token contexts; :meth:`run` continues all (or some) of them in batches.

    Build it with :meth:`build` (one forward over every context), keep it for as long as the model's
    weights and the hooks active *while building* stay the same, and call :meth:`run` under whatever
    hooks should act on the continuation only.
    """

    def __init__(
        self,
        prefix_keys: list[torch.Tensor],
        prefix_values: list[torch.Tensor],
        prefix_len: int,
        batches: list[_Batch],
        size: int,
        batch_size: int,
    ) -> None:
        self.prefix_keys, self.prefix_values, self.prefix_len = prefix_keys, prefix_values, prefix_len
        self.batches, self.size, self.batch_size = batches, size, batch_size

    def __len__(self) -> int:
        return self.size

    @classmethod
    @torch.inference_mode()
    def build(
        cls,
        model: PreTrainedModel,
        contexts: Sequence[Sequence[int]],
        batch_size: int = 16,
        description: str = "Encoding prompts",
    ) -> ContextBank:
        if not contexts:
            raise ConfigError("no contexts to encode")
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        device = model.device
        # Keep at least one token per context out of the shared prefix, so every row owns its last token.
        prefix_len = min(common_prefix_length(*contexts), min(len(c) for c in contexts) - 1)
        prefix_keys: list[torch.Tensor] = []
        prefix_values: list[torch.Tensor] = []
        if prefix_len > 0:
            ids = torch.tensor([list(contexts[0][:prefix_len])], device=device)
            out = model(ids, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)
            prefix_keys = [layer.keys for layer in out.past_key_values.layers]
            prefix_values = [layer.values for layer in out.past_key_values.layers]
        batches = []
        with progress_bar(description, total=len(contexts), unit="prompts") as advance:
            for start in range(0, len(contexts), batch_size):
                chunk = [list(c[prefix_len:]) for c in contexts[start : start + batch_size]]
                batches.append(cls._encode(model, chunk, prefix_keys, prefix_values, prefix_len, start))
                advance(len(chunk))
        return cls(prefix_keys, prefix_values, prefix_len, batches, len(contexts), batch_size)

    @staticmethod
    def _encode(
        model: PreTrainedModel,
        chunk: list[list[int]],
        prefix_keys: list[torch.Tensor],
        prefix_values: list[torch.Tensor],
        prefix_len: int,
        start: int,
    ) -> _Batch:
        device = model.device
        rows, width = len(chunk), max(len(c) for c in chunk)
        ids = torch.zeros(rows, width, dtype=torch.long, device=device)
        mask = torch.zeros(rows, prefix_len + width, dtype=torch.long, device=device)
        mask[:, :prefix_len] = 1
        positions = torch.zeros(rows, width, dtype=torch.long, device=device)
        for r, ctx in enumerate(chunk):
            n = len(ctx)
            ids[r, width - n :] = torch.tensor(ctx, device=device)
            mask[r, prefix_len + width - n :] = 1
            positions[r, width - n :] = torch.arange(prefix_len, prefix_len + n, device=device)
        cache = _cache(prefix_keys, prefix_values, rows)
        out = model(
            ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        keys = [layer.keys[:, :, prefix_len:].contiguous() for layer in out.past_key_values.layers]
        values = [layer.values[:, :, prefix_len:].contiguous() for layer in out.past_key_values.layers]
        lengths = torch.tensor([len(c) for c in chunk], device=device)
        return _Batch(keys, values, mask, prefix_len + lengths, start)

    @torch.inference_mode()
    def run(
        self,
        model: PreTrainedModel,
        continuations: Sequence[Sequence[int]],
        rows: Sequence[int] | None = None,
        max_rows: int = 128,
        chunk_context: Callable[[slice], AbstractContextManager[object]] | None = None,
        vocab: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Next-token logits (float32) after each selected context + its continuation.

        ``continuations[i]`` continues context ``rows[i]`` (every context in order when ``rows`` is
        None; rows may repeat and come in any order); all continuations have the same length. Rows are
        run ``max_rows`` at a time: continuing is memory-bound on a CPU (every forward reads all the
        weights), so wide forwards are much cheaper per row. ``chunk_context(slice)``, if given, is
        entered around the forward of the rows in that slice (per-row hooks, e.g. a CV sweep).
        ``vocab``: return only these columns, computed from the decoder's last hidden state and those
        rows of the output embedding (the full vocabulary projection is ~40% of a 0.5B model's work per
        row); callers must check once that this equals the model's own logits (see the session).
        """
        selected = list(range(self.size)) if rows is None else [int(r) for r in rows]
        if len(continuations) != len(selected):
            raise ConfigError(f"{len(continuations)} continuations for {len(selected)} contexts")
        if selected and (min(selected) < 0 or max(selected) >= self.size):
            raise ConfigError(f"rows must lie in 0..{self.size - 1}")
        lengths = {len(c) for c in continuations}
        if len(lengths) > 1 or 0 in lengths:
            raise ConfigError("continuations must be non-empty and all of the same length")
        if max_rows < 1:
            raise ConfigError("max_rows must be >= 1")
        outputs: list[torch.Tensor] = []
        for begin in range(0, len(selected), max_rows):
            part = slice(begin, min(begin + max_rows, len(selected)))
            keys, values, mask, next_position = self._gather(selected[part], model.device)
            tokens = torch.tensor([list(c) for c in continuations[part]], device=model.device)
            steps = tokens.shape[1]
            cache = DynamicCache(ddp_cache_data=list(zip(keys, values, strict=True)))
            mask = torch.cat([mask, torch.ones(tokens.shape[0], steps, dtype=torch.long, device=model.device)], 1)
            positions = next_position[:, None] + torch.arange(steps, device=model.device)
            with chunk_context(part) if chunk_context is not None else nullcontext():
                if vocab is None:
                    out = model(
                        tokens,
                        attention_mask=mask,
                        position_ids=positions,
                        past_key_values=cache,
                        use_cache=True,
                        logits_to_keep=1,
                    )
                    outputs.append(out.logits[:, -1].float())
                else:
                    hidden = model.get_decoder()(
                        tokens, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
                    ).last_hidden_state[:, -1]
                    outputs.append(_vocab_logits(model, hidden, vocab))
        return torch.cat(outputs) if outputs else torch.zeros(0)

    def _gather(
        self, rows: list[int], device: torch.device
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Cache tensors, mask and next positions of ``rows`` (in that order), batches left-padded to one width."""
        wanted = torch.tensor(rows, dtype=torch.long)
        starts = torch.tensor([b.start for b in self.batches])
        batch_of = torch.searchsorted(starts, wanted, right=True) - 1
        width = max(self.batches[b].mask.shape[1] for b in batch_of.unique().tolist())
        layers = len(self.batches[0].keys)
        keys: list[list[torch.Tensor]] = [[] for _ in range(layers)]
        values: list[list[torch.Tensor]] = [[] for _ in range(layers)]
        masks, nexts, order = [], [], []
        for b in batch_of.unique().tolist():
            batch = self.batches[b]
            where = (batch_of == b).nonzero().flatten()
            local = (wanted[where] - batch.start).to(batch.mask.device)
            pad = width - batch.mask.shape[1]
            for i in range(layers):
                keys[i].append(torch.nn.functional.pad(batch.keys[i][local], (0, 0, pad, 0)))
                values[i].append(torch.nn.functional.pad(batch.values[i][local], (0, 0, pad, 0)))
            mask = batch.mask[local]
            masks.append(
                torch.cat([mask[:, : self.prefix_len], mask.new_zeros(len(local), pad), mask[:, self.prefix_len :]], 1)
            )
            nexts.append(batch.next_position[local])
            order.append(where)
        inverse = torch.argsort(torch.cat(order)).to(device)
        n = len(rows)
        out_keys = [torch.cat(k)[inverse].to(device) for k in keys]
        out_values = [torch.cat(v)[inverse].to(device) for v in values]
        if self.prefix_len:
            out_keys = [
                torch.cat([p.expand(n, -1, -1, -1), k], 2) for p, k in zip(self.prefix_keys, out_keys, strict=True)
            ]
            out_values = [
                torch.cat([p.expand(n, -1, -1, -1), v], 2) for p, v in zip(self.prefix_values, out_values, strict=True)
            ]
        return out_keys, out_values, torch.cat(masks)[inverse].to(device), torch.cat(nexts)[inverse].to(device)

    # ---- persistence (safetensors, never pickle) ------------------------------------------------
    def save(self, path: str | Path, meta: dict | None = None) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for i, (k, v) in enumerate(zip(self.prefix_keys, self.prefix_values, strict=True)):
            tensors[f"prefix.{i}.k"], tensors[f"prefix.{i}.v"] = k.contiguous(), v.contiguous()
        for b, batch in enumerate(self.batches):
            for i, (k, v) in enumerate(zip(batch.keys, batch.values, strict=True)):
                tensors[f"b{b}.{i}.k"], tensors[f"b{b}.{i}.v"] = k, v
            tensors[f"b{b}.mask"], tensors[f"b{b}.next"] = batch.mask, batch.next_position
        header = {
            "format": BANK_FORMAT,
            "prefix_len": self.prefix_len,
            "size": self.size,
            "batch_size": self.batch_size,
            "batches": [b.start for b in self.batches],
            "layers": len(self.batches[0].keys),
            **(meta or {}),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        save_file(
            {k: t.detach().cpu() for k, t in tensors.items()}, str(tmp), metadata={"memalign": json.dumps(header)}
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ContextBank:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            header = json.loads((fh.metadata() or {}).get("memalign", "{}"))
        if header.get("format") != BANK_FORMAT:
            raise DataError(f"{path} is not a memalign context bank")
        tensors = load_file(str(path), device=str(device))
        layers = header["layers"]
        prefix_keys = [tensors[f"prefix.{i}.k"] for i in range(layers)] if header["prefix_len"] else []
        prefix_values = [tensors[f"prefix.{i}.v"] for i in range(layers)] if header["prefix_len"] else []
        batches = [
            _Batch(
                [tensors[f"b{b}.{i}.k"] for i in range(layers)],
                [tensors[f"b{b}.{i}.v"] for i in range(layers)],
                tensors[f"b{b}.mask"],
                tensors[f"b{b}.next"],
                start,
            )
            for b, start in enumerate(header["batches"])
        ]
        return cls(prefix_keys, prefix_values, header["prefix_len"], batches, header["size"], header["batch_size"])


def _vocab_logits(model: PreTrainedModel, hidden: torch.Tensor, vocab: Sequence[int]) -> torch.Tensor:
    head = model.get_output_embeddings()
    index = torch.as_tensor(list(vocab), device=hidden.device)
    bias = None if getattr(head, "bias", None) is None else head.bias[index]
    logits = torch.nn.functional.linear(hidden, head.weight[index], bias).float()
    return soft_cap(logits, final_logit_softcap(model.config))


def _cache(prefix_keys: list[torch.Tensor], prefix_values: list[torch.Tensor], rows: int) -> DynamicCache:
    # Plain full-length layers even for sliding-window models: the bank keeps whole contexts, and the
    # model's mask still applies the window.
    if not prefix_keys:
        return DynamicCache()
    return DynamicCache(
        ddp_cache_data=[
            (k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
            for k, v in zip(prefix_keys, prefix_values, strict=True)
        ]
    )
