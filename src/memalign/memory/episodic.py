"""``EpisodicMemory``: attach EM-LLM to a transformers model through its extension points, and detach it.

Attaching (a context manager, as kvpress presses) does four reversible things:

1. selects the attention function registered under our own name ``memalign_em`` (never mutating the
   stock registry entries) with ``model.set_attn_implementation``;
2. makes the rotary module yield the identity, so keys reach the cache unrotated;
3. hooks the base decoder: before each forward it makes sure an :class:`EMCache` is in use (injecting a
   fresh one when the caller passed none) and records the padding mask and ids; after it, the final
   hidden states feed surprise and events are formed for every layer at once;
4. sets ``generation_config.prefill_chunk_size`` so a plain ``model.generate`` prefills in chunks.

Leaving restores all four; outputs are then bit-identical to before attaching.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel

from memalign.errors import ConfigError, MemalignError
from memalign.memory import spill
from memalign.memory.attention import memory_attention
from memalign.memory.cache import EMCache
from memalign.memory.config import EMConfig
from memalign.memory.rope import RopeTable, bypass_rotary
from memalign.memory.state import LayerMemory, SequenceMemory
from memalign.models.arch import SLIDING_ATTENTION, get_arch_spec, text_config
from memalign.models.logits import final_logit_softcap, soft_cap

ATTN_IMPLEMENTATION = "memalign_em"
_HANDLE_ATTR = "_memalign_episodic_memory"


def prefill_bounds(total: int, chunk_size: int, last_token_alone: bool) -> list[int]:
    """Chunk boundaries of a prefill of ``total`` tokens: ``[0, b1, ..., total]``.

    Chunks are end-aligned with the input, so left-padded sequences of a batch see the same boundaries
    relative to their own tokens as when run alone (retrieval is per chunk). With ``last_token_alone``
    the last token is its own step (the reference driver): the answer's first token is then predicted
    after a retrieval for that token's query, not for the mean query of a chunk of context.
    """
    body = total - 1 if last_token_alone and total > 1 else total
    bounds = [0, *range(body % chunk_size or chunk_size, body + 1, chunk_size)]
    return bounds + [total] if body < total else bounds


def _em_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Registered as ``memalign_em``: delegates to the memory of the module's layer, sequence by sequence."""
    memory: EpisodicMemory | None = getattr(module, _HANDLE_ATTR, None)
    if memory is None or memory.active_cache is None:
        raise MemalignError("the 'memalign_em' attention implementation only works while an EpisodicMemory is attached")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    layer_idx = module.layer_idx
    rope = memory.rope_tables[layer_idx]
    out = query.new_zeros(query.shape[0], query.shape[2], query.shape[1], value.shape[-1])
    for b, (layer, start, valid) in enumerate(memory.active_cache.layer_states(layer_idx)):
        q = query[b : b + 1]
        full = bool(valid.all())
        if not full:
            q = q[:, :, valid]
        if q.shape[2] == 0:
            continue
        o = memory_attention(layer, q, start, scale, rope, memory.config)
        o = o[0].transpose(0, 1)  # [L, H, D]
        if full:
            out[b] = o
        else:
            out[b, valid] = o
    return out, None


AttentionInterface.register(ATTN_IMPLEMENTATION, _em_attention_forward)


class EpisodicMemory:
    """EM-LLM on a Hugging Face causal LM. Use as ``with EpisodicMemory(model, config) as mem: ...``.

    ``config``: an :class:`EMConfig`, a mapping of its fields, a preset name or YAML path
    (``EMConfig.preset``) or None for defaults. Token counts the model cannot place (a window or memory
    distance beyond its ``max_position_embeddings``) are refused here, before anything is allocated.
    """

    def __init__(
        self, model: PreTrainedModel, config: EMConfig | Mapping[str, Any] | str | Path | None = None, **overrides: Any
    ) -> None:
        if isinstance(config, str | Path):
            config = EMConfig.preset(config, **overrides)
        elif config is None:
            config = EMConfig.from_dict(overrides)
        elif isinstance(config, Mapping):
            config = EMConfig.from_dict({**config, **overrides})
        elif isinstance(config, EMConfig):
            config = config.replace(**overrides) if overrides else config
        else:
            raise ConfigError(
                f"EpisodicMemory config must be an EMConfig, a mapping, a preset name or a YAML path, "
                f"got {type(config).__name__}"
            )
        self.model, self.config = model, config
        self.spec = get_arch_spec(model)
        config.check_model(self.spec.max_position_embeddings, self.spec.model_type)
        cfg = text_config(model.config)
        if getattr(cfg, "attn_logit_softcapping", None):
            raise ConfigError(
                f"{self.spec.model_type}: attention logit soft-capping is not supported by memory attention"
            )
        self._softcap = final_logit_softcap(model.config)
        self._spill_token: int | None = None
        self.active_cache: EMCache | None = None
        self.rope_tables: list[RopeTable] = []
        self._handles: list[Any] = []
        self._saved: dict[str, Any] = {}
        self._caches: weakref.WeakSet[EMCache] = weakref.WeakSet()
        self.attached = False

    # ---- attach / detach --------------------------------------------------------------------------
    def __enter__(self) -> EpisodicMemory:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def attach(self) -> EpisodicMemory:
        model, spec = self.model, self.spec
        if self.attached:
            return self
        if getattr(spec.attention(model, 0), _HANDLE_ATTR, None) is not None:
            raise ConfigError("an EpisodicMemory is already attached to this model; detach it first")
        param = next(model.parameters())
        self.rope_tables = [
            RopeTable(
                spec.rotary_fn(model, i),
                param.dtype,
                param.device,
                size=self.config.n_local + self.config.chunk_size + 1,
            )
            for i in range(spec.num_layers)
        ]
        self._saved = {
            "attn": model.config._attn_implementation,
            "prefill_chunk_size": getattr(model.generation_config, "prefill_chunk_size", None),
        }
        try:
            model.set_attn_implementation(ATTN_IMPLEMENTATION)
            if model.config._attn_implementation != ATTN_IMPLEMENTATION:
                raise ConfigError(f"{type(model).__name__} does not accept a custom attention implementation")
            for attn in spec.attentions(model):
                setattr(attn, _HANDLE_ATTR, self)
            self._handles.append(bypass_rotary(spec.rotary(model)))
            decoder = spec.decoder(model)
            self._handles.append(decoder.register_forward_pre_hook(self._before_decoder, with_kwargs=True))
            self._handles.append(decoder.register_forward_hook(self._after_decoder, with_kwargs=True))
            model.generation_config.prefill_chunk_size = self.config.chunk_size
        except BaseException:
            self._restore()
            raise
        self.attached = True
        if self.config.store.host_budget_bytes is not None:
            # A disk tier: SIGTERM/SIGINT detach this memory, which removes its spill directories.
            self._spill_token = spill.track_memory(self)
        return self

    def detach(self) -> None:
        """Restore the model. Caches of this memory release their disk files (they cannot be used any more)."""
        if self.attached:
            self._restore()
            self.attached = False
            for cache in list(self._caches):
                cache.close()
            if self._spill_token is not None:
                spill.forget_memory(self._spill_token)
                self._spill_token = None

    def _restore(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for attn in self.spec.attentions(self.model):
            if hasattr(attn, _HANDLE_ATTR):
                delattr(attn, _HANDLE_ATTR)
        if self._saved:
            self.model.set_attn_implementation(self._saved["attn"])
            self.model.generation_config.prefill_chunk_size = self._saved["prefill_chunk_size"]
        self.active_cache = None

    # ---- state -------------------------------------------------------------------------------------
    def new_cache(self) -> EMCache:
        cache = EMCache(self)
        self._caches.add(cache)
        return cache

    def new_sequence(self, batch_size: int = 1) -> SequenceMemory:
        spec, cfg = self.spec, self.config
        param = next(self.model.parameters())
        layers = []
        memory_layers = []
        n_full = sum(1 for t in spec.layer_types if not (t == SLIDING_ATTENTION and spec.sliding_window))
        store_config = cfg.store.per_store(max(n_full, 1) * batch_size)
        for i, layer_type in enumerate(spec.layer_types):
            sliding = layer_type == SLIDING_ATTENTION and spec.sliding_window is not None
            window = spec.sliding_window if sliding else cfg.n_local
            use_memory = not sliding and cfg.uses_memory
            if not sliding:
                memory_layers.append(i)
            # Right after a chunk is appended the tail holds the window, at most one unfinished event
            # (segmentation keeps < max_block_size tokens waiting for their boundary) and the chunk.
            waiting = cfg.max_block_size if use_memory else 0
            layers.append(
                LayerMemory(
                    spec.num_heads,
                    spec.num_kv_heads,
                    spec.head_dim,
                    window,
                    0 if sliding else cfg.n_init,
                    use_memory,
                    param.dtype,
                    param.device,
                    store_config,
                    max_tail=window + waiting + cfg.chunk_size,
                )
            )
        return SequenceMemory(
            config=cfg,
            layers=layers,
            memory_layers=memory_layers,
            hidden_size=spec.hidden_size,
            dtype=param.dtype,
            device=param.device,
        )

    def log_prob(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target | hidden) from the model's own LM head in fp32, in row chunks.

        ``logit[target] - logsumexp(logits)`` rather than a gathered ``log_softmax``: no second
        [rows, vocab] tensor. Chunks of ~8M logits (32 MiB), but at least 128 rows, keep this transient
        small next to the model (it runs for every token, so it sets part of the peak memory of a long
        prefill) while the LM-head matmul stays efficient: with a 152k vocabulary, 55-row chunks made it
        ~1.4x slower on CPU than 128-row ones (measured), and it is a sixth of a Qwen2.5-0.5B chunk.
        """
        head = self.model.get_output_embeddings()
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        step = max(128, (1 << 23) // max(head.out_features, 1))
        for a in range(0, hidden.shape[0], step):
            logits = soft_cap(head(hidden[a : a + step]).float(), self._softcap)
            picked = logits.gather(-1, targets[a : a + step, None])[:, 0]
            out[a : a + step] = picked - torch.logsumexp(logits, dim=-1)
        return out

    # ---- decoder hooks ----------------------------------------------------------------------------------
    def _before_decoder(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        cache = kwargs.get("past_key_values")
        if not isinstance(cache, EMCache):
            if cache is not None and cache.get_seq_length() > 0:
                raise ConfigError(
                    "the model was called with a non-memory cache that already holds tokens; with episodic memory "
                    "attached pass past_key_values=memory.new_cache() (or none)"
                )
            cache = self.new_cache()
            kwargs["past_key_values"] = cache
        elif cache.memory is not self:
            raise ConfigError("this EMCache belongs to another EpisodicMemory")
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        batch, length = input_ids.shape if input_ids is not None else embeds.shape[:2]
        if length > self.config.n_local:
            raise ConfigError(
                f"a forward of {length} tokens exceeds n_local={self.config.n_local}; feed long inputs in chunks "
                "(memory.generate(...), or model.generate(..., prefill_chunk_size=...))"
            )
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            valid = mask[:, -length:].bool()
        else:
            valid = torch.ones(
                batch, length, dtype=torch.bool, device=(input_ids if input_ids is not None else embeds).device
            )
        cache.begin_forward(input_ids, valid)
        self.active_cache = cache
        kwargs["use_cache"] = True
        return args, kwargs

    def _after_decoder(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        cache = self.active_cache
        if cache is None:
            return
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        cache.end_forward(hidden)
        self.active_cache = None

    # ---- driver ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(
        self,
        input_ids: torch.Tensor,
        cache: EMCache | None = None,
        attention_mask: torch.Tensor | None = None,
        progress: Any = None,
    ) -> tuple[EMCache, torch.Tensor]:
        """Feed ``input_ids`` [B, T] chunk by chunk; returns the cache and the last position's logits [B, V].

        Only the base decoder runs per chunk, so no [chunk, vocab] logits are kept beyond what surprise needs.
        """
        if not self.attached:
            raise MemalignError("attach the memory first: `with EpisodicMemory(model, cfg) as mem:`")
        cache = cache if cache is not None else self.new_cache()
        decoder = self.spec.decoder(self.model)
        device = next(self.model.parameters()).device
        if input_ids.ndim != 2:
            raise MemalignError(f"prefill needs token ids of shape [batch, tokens], got {tuple(input_ids.shape)}")
        input_ids = input_ids.to(device)
        if cache.unfed is not None:
            # The last token generated on this cache was never fed back: it precedes the new input.
            input_ids = torch.cat([cache.unfed.to(device), input_ids], dim=1)
            if attention_mask is not None:
                attention_mask = torch.cat([torch.ones_like(cache.unfed), attention_mask.to(device)], dim=1)
            cache.unfed = None
        if input_ids.shape[1] == 0:
            raise MemalignError(
                "prefill needs at least one token; encode a non-empty prompt (a chat template adds its own tokens)"
            )
        past = cache.get_seq_length()
        full_mask = attention_mask.to(device) if attention_mask is not None else None
        hidden = None
        bounds = prefill_bounds(input_ids.shape[1], self.config.chunk_size, self.config.last_token_alone)
        for a, b in zip(bounds, bounds[1:], strict=False):
            chunk = input_ids[:, a:b]
            kwargs: dict[str, Any] = {"input_ids": chunk, "past_key_values": cache, "use_cache": True}
            if full_mask is not None:
                kwargs["attention_mask"] = full_mask[:, : past + b]
            hidden = decoder(**kwargs).last_hidden_state[:, -1]
            if progress is not None:
                progress(chunk.shape[1])
        return cache, self._logits(hidden)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return soft_cap(self.model.get_output_embeddings()(hidden).float(), self._softcap)

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int = 32,
        cache: EMCache | None = None,
        attention_mask: torch.Tensor | None = None,
        eos_token_id: int | list[int] | None = None,
        progress: Any = None,
        streamer: Any = None,
    ) -> torch.Tensor:
        """Greedy generation for inputs of any length: chunked prefill, then one token at a time.

        Returns only the new tokens [B, <=max_new_tokens]. Pass the same ``cache`` again to continue a
        conversation (multi-turn): the new ``input_ids`` are appended to everything already in memory.
        """
        if streamer is not None:
            streamer.put(input_ids.cpu())  # as transformers' generate: the prompt first (skipped by skip_prompt)
        cache, logits = self.prefill(input_ids, cache, attention_mask, progress)
        mask = attention_mask.to(logits.device) if attention_mask is not None else None
        return self.decode(
            cache, logits, max_new_tokens, attention_mask=mask, eos_token_id=eos_token_id, streamer=streamer
        )

    @torch.inference_mode()
    def decode(
        self,
        cache: EMCache,
        logits: torch.Tensor,
        max_new_tokens: int,
        attention_mask: torch.Tensor | None = None,
        eos_token_id: int | list[int] | None = None,
        streamer: Any = None,
    ) -> torch.Tensor:
        """Greedy decoding from the last logits [B, V] of a prefill on ``cache``; returns new tokens [B, n]."""
        eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
        decoder = self.spec.decoder(self.model)
        batch = logits.shape[0]
        mask = attention_mask
        done = torch.zeros(batch, dtype=torch.bool, device=logits.device)
        generated = []
        for step in range(max_new_tokens):
            token = logits.argmax(dim=-1)
            generated.append(token)
            if streamer is not None:
                streamer.put(token.cpu())
            if eos:
                done |= torch.isin(token, torch.tensor(sorted(eos), device=token.device))
            if bool(done.all()) or step == max_new_tokens - 1:
                cache.unfed = token[:, None]  # fed first by the next prefill on this cache (multi-turn)
                break
            kwargs: dict[str, Any] = {"input_ids": token[:, None], "past_key_values": cache, "use_cache": True}
            if mask is not None:
                mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype, device=mask.device)], dim=1)
                kwargs["attention_mask"] = mask
            logits = self._logits(decoder(**kwargs).last_hidden_state[:, -1])
        if streamer is not None:
            streamer.end()
        return torch.stack(generated, dim=1) if generated else torch.zeros(batch, 0, dtype=torch.long)
