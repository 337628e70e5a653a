"""``EMCache``: a transformers ``Cache`` whose layers hold episodic memory instead of a plain KV cache.

It reports the logical length (every token seen, padding included) because transformers derives
position ids and generation slicing from ``get_seq_length()``. Its layers' ``update`` hands the new
K/V to the per-sequence memory; the registered memory attention function (which does not receive the
cache) reaches the state through the attention module's ``EpisodicMemory`` handle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from memalign.errors import ConfigError
from memalign.memory.state import LayerMemory, SequenceMemory

if TYPE_CHECKING:
    from memalign.memory.episodic import EpisodicMemory


class EMCacheLayer(CacheLayerMixin):
    is_compileable = False
    is_sliding = False

    def __init__(self, cache: EMCache, layer_idx: int) -> None:
        super().__init__()
        self.cache, self.layer_idx = cache, layer_idx
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.cache.append_kv(self.layer_idx, key_states, value_states)
        return key_states, value_states

    def get_seq_length(self) -> int:
        return self.cache.seq_length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cache.seq_length + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.cache.reset()


class EMCache(Cache):
    """Episodic-memory cache of one :class:`EpisodicMemory`; create it with ``memory.new_cache()``."""

    def __init__(self, memory: EpisodicMemory) -> None:
        self.memory = memory
        super().__init__(layers=[EMCacheLayer(self, i) for i in range(memory.spec.num_layers)])
        self.seq_length = 0
        self.sequences: list[SequenceMemory] = []
        self._valid: torch.Tensor | None = None  # [B, L] padding mask of the running forward
        self._input_ids: torch.Tensor | None = None
        self._starts: list[int] = []  # per sequence: position of the running chunk's first token
        self.unfed: torch.Tensor | None = None  # last generated token(s) [B, 1] not yet in memory

    # ---- forward protocol (driven by EpisodicMemory's decoder hooks) -------------------------------
    def begin_forward(self, input_ids: torch.Tensor | None, valid: torch.Tensor) -> None:
        batch = valid.shape[0]
        if not self.sequences:
            self.sequences = [self.memory.new_sequence(batch) for _ in range(batch)]
        elif batch != len(self.sequences):
            raise ConfigError(f"this memory cache holds {len(self.sequences)} sequence(s), got a batch of {batch}")
        self._valid, self._input_ids = valid, input_ids
        self._starts = [seq.length for seq in self.sequences]

    def append_kv(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        for b, seq in enumerate(self.sequences):
            valid = self._valid[b]
            k, v = keys[b], values[b]
            if not bool(valid.all()):
                k, v = k[:, valid], v[:, valid]
            seq.layers[layer_idx].append(k, v)

    def end_forward(self, hidden: torch.Tensor) -> None:
        log_prob = self.memory.log_prob
        for b, seq in enumerate(self.sequences):
            valid = self._valid[b]
            ids = self._input_ids[b][valid] if self._input_ids is not None else None
            seq.record(ids, hidden[b][valid])
            seq.evict(log_prob)
        self.seq_length += self._valid.shape[1]
        self._valid = self._input_ids = None

    def layer_states(self, layer_idx: int) -> list[tuple[LayerMemory, int, torch.Tensor]]:
        """(layer memory, chunk start position, valid mask) of each sequence, for the attention function."""
        return [(seq.layers[layer_idx], self._starts[b], self._valid[b]) for b, seq in enumerate(self.sequences)]

    # ---- Cache API -----------------------------------------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seq_length

    def reset(self) -> None:
        self.close()
        self.seq_length = 0
        self.sequences = []
        self.unfed = None

    def close(self) -> None:
        """Release event storage (disk tier files included)."""
        for seq in self.sequences:
            for layer in seq.layers:
                layer.close()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise ConfigError("episodic memory does not support beam search; use greedy or sampling")

    def crop(self, max_length: int) -> None:
        raise ConfigError("episodic memory cannot be cropped (assisted/speculative decoding is not supported)")

    @property
    def is_compileable(self) -> bool:
        return False

    # ---- introspection -------------------------------------------------------------------------------
    def stats(self) -> list[dict[str, float | int]]:
        """Per sequence and layer: events, mean event size, tokens in memory/window/sinks, bytes held."""
        rows = []
        for b, seq in enumerate(self.sequences):
            for i, layer in enumerate(seq.layers):
                store = layer.store
                events = len(store) if store is not None else 0
                in_events = store.num_tokens if store is not None else 0
                rows.append(
                    {
                        "sequence": b,
                        "layer": i,
                        "events": events,
                        "mean_event_size": in_events / events if events else 0.0,
                        "tokens_in_events": in_events,
                        "tokens_in_window": len(layer.tail_k),
                        "sink_tokens": len(layer.init_k),
                        "bytes": sum(layer.nbytes().values()),
                        "retrieved_last": len(layer.last_retrieved),
                    }
                )
        return rows
