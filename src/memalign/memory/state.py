"""Memory state of one sequence: per-layer token tails, sinks and event stores, and the segmentation state.

Positions are absolute token indices within the sequence (padding excluded). For a memory layer the
invariant after every forward is: tokens ``[0, min(n_init, tail_start))`` are sinks, tokens before
``tail_start`` past the sinks live in events, and the tail holds ``[tail_start, length)`` -- every token
that is still inside some future query's window, plus *pending* tokens that left every window but
wait for their event to close. All layers share the same event boundaries (decided once per step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from memalign.errors import ConfigError
from memalign.memory.buffers import TokenBuffer
from memalign.memory.config import EMConfig
from memalign.memory.refinement import refine_boundaries
from memalign.memory.segmentation import BOUNDARY_STRATEGIES, BoundaryContext, cut_events
from memalign.memory.store import EventStore
from memalign.memory.store_config import StoreConfig


class LayerMemory:
    """One attention layer of one sequence.

    ``window`` is the local window (n_local, or the model's own sliding window for sliding layers);
    ``use_memory`` False (sliding layers, or streaming with n_mem == 0) means evicted tokens are dropped
    instead of stored as events. ``max_tail`` bounds the tail (window + tokens awaiting segmentation + one
    chunk) so its buffers stop growing at a fixed size.

    Representative keys need the attention mass each key receives from the queries whose window it is
    in (as the reference's ``repr_score``). The window attention of memory layers returns it in the same
    pass (:func:`~memalign.memory.kernels.window_attention`) and the layer accumulates it per tail token
    in ``tail_mass`` until the token becomes part of an event (:meth:`to_events`).
    """

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        window: int,
        n_init: int,
        use_memory: bool,
        dtype: torch.dtype,
        device: torch.device,
        store_config: StoreConfig | None = None,
        max_tail: int | None = None,
    ) -> None:
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.window, self.n_init, self.use_memory = window, n_init, use_memory
        self.tail_k = TokenBuffer(num_kv_heads, (head_dim,), dtype, device, max_live=max_tail)
        self.tail_v = TokenBuffer(num_kv_heads, (head_dim,), dtype, device, max_live=max_tail)
        self.tail_start = 0
        self.init_k = TokenBuffer(num_kv_heads, (head_dim,), dtype, device, capacity=max(n_init, 1))
        self.init_v = TokenBuffer(num_kv_heads, (head_dim,), dtype, device, capacity=max(n_init, 1))
        self.store = (
            EventStore(num_kv_heads, head_dim, num_heads * head_dim, dtype, device, store_config)
            if use_memory
            else None
        )
        self.tail_mass = TokenBuffer(num_heads, (), torch.float32, device, max_live=max_tail) if use_memory else None
        self.contiguity: list[int] = []
        self.last_retrieved: list[int] = []
        # (sinks, first tail position attended, chunk end, event ids) of the last forward: see attended_spans
        self.last_view: tuple[int, int, int, list[int]] | None = None

    @property
    def has_memory_stage(self) -> bool:
        """Whether keys outside the window are attended at all (sinks or events); else they are dropped."""
        return self.n_init > 0 or self.use_memory

    @property
    def tail_end(self) -> int:
        return self.tail_start + len(self.tail_k)

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """keys/values [Hkv, n, D] of the newest tokens (unrotated)."""
        self.tail_k.append(keys)
        self.tail_v.append(values)
        if self.tail_mass is not None:
            self.tail_mass.append(keys.new_zeros(self.num_heads, keys.shape[1], dtype=torch.float32))

    def add_mass(self, mass: torch.Tensor, start: int) -> None:
        """Add attention mass [H, n] received by the tail keys at positions ``[start, start + n)``."""
        if self.tail_mass is not None:
            a = start - self.tail_start
            self.tail_mass.view(a, a + mass.shape[1]).add_(mass)

    def tail_slice(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = start - self.tail_start, stop - self.tail_start
        return self.tail_k.view(a, b), self.tail_v.view(a, b)

    def _pop(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.tail_start += n
        if self.tail_mass is not None:
            self.tail_mass.pop_front(n)
        return self.tail_k.pop_front(n), self.tail_v.pop_front(n)

    def drop(self, n: int) -> None:
        self._pop(n)

    def to_sinks(self, n: int) -> None:
        k, v = self._pop(n)
        self.init_k.append(k)
        self.init_v.append(v)

    def window_mass(self, n: int) -> torch.Tensor:
        """Attention mass [H, n] the ``n`` oldest tail keys received so far from queries whose window held them
        (final once every query of their window has run, which :meth:`SequenceMemory.evict` ensures)."""
        return self.tail_mass.view(0, n)

    def to_events(self, sizes: list[int], repr_topk: int) -> None:
        """Cut the oldest ``sum(sizes)`` tail tokens into events of these sizes (mass computed once)."""
        mass = self.window_mass(sum(sizes))
        offset = 0
        for n in sizes:
            position = self.tail_start
            k, v = self._pop(n)
            assert self.store is not None
            self.store.add(k, v, representative_key(k, mass[:, offset : offset + n], repr_topk), position)
            offset += n

    def attended_spans(self) -> list[tuple[int, int]]:
        """Sorted, merged absolute token ranges ``[a, b)`` the newest query of the last forward attended:
        the sinks, the retrieved events and the tail (window plus tokens awaiting segmentation).

        A diagnostic, not used by attention: benchmarks check whether a needle was within reach of the
        query that produced the first answer token, which tells a retrieval miss from a model that had
        the needle in view and still answered wrong.
        """
        if self.last_view is None:
            return []
        n_sinks, tail_from, end, event_ids = self.last_view
        spans = [(0, n_sinks)] if n_sinks else []
        if event_ids:
            assert self.store is not None
            sizes = self.store.sizes.tolist()
            spans += [(self.store.positions[i], self.store.positions[i] + sizes[i]) for i in event_ids]
        spans.append((tail_from, end))
        merged: list[tuple[int, int]] = []
        for a, b in sorted(spans):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def nbytes(self) -> dict[str, int]:
        tail = self.tail_k.nbytes() + self.tail_v.nbytes()
        if self.tail_mass is not None:
            tail += self.tail_mass.nbytes()
        sinks = self.init_k.nbytes() + self.init_v.nbytes()
        return {"tail": tail, "sinks": sinks, "events": self.store.nbytes() if self.store else 0}


def representative_key(keys: torch.Tensor, score: torch.Tensor, topk: int) -> torch.Tensor:
    """Per query head, the mean of the ``topk`` keys that received most attention: [H * D].

    ``keys`` [Hkv, n, D], ``score`` [H, n]; query head h reads KV head h // (H / Hkv).
    """
    num_heads, n = score.shape
    group = num_heads // keys.shape[0]
    k = min(topk, n)
    top = torch.topk(score, k, dim=-1).indices  # [H, k]
    per_head = keys.repeat_interleave(group, dim=0)  # [H, n, D]
    picked = torch.gather(per_head, 1, top.unsqueeze(-1).expand(-1, -1, keys.shape[-1]))
    return picked.float().mean(dim=1).to(keys.dtype).reshape(-1)


LogProbFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SequenceMemory:
    """All layers of one sequence plus the shared segmentation state."""

    config: EMConfig
    layers: list[LayerMemory]
    memory_layers: list[int]
    hidden_size: int
    dtype: torch.dtype
    device: torch.device
    length: int = 0
    # Segmentation: tokens [pending_start, decided) have boundary flags; surprise of all decided tokens
    # (the last `surprise_window` values are kept for thresholds).
    decided: int = 0
    flags: list[bool] = field(default_factory=list)
    surprise_history: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    _ids: TokenBuffer | None = None
    _hidden: TokenBuffer | None = None
    _aux_start: int = 0  # position of _ids/_hidden[0]
    generator: torch.Generator = field(default_factory=torch.Generator)

    def __post_init__(self) -> None:
        self._ids = TokenBuffer(1, (), torch.long, self.device)
        self._hidden = TokenBuffer(1, (self.hidden_size,), self.dtype, self.device)
        self.generator.manual_seed(self.config.seed)

    @property
    def pending_start(self) -> int:
        return self.layers[self.memory_layers[0]].tail_start if self.memory_layers else self.length

    def record(self, input_ids: torch.Tensor | None, hidden: torch.Tensor) -> None:
        """Keep what surprise needs: ids [n] and final hidden states [n, hidden] of the newest tokens."""
        if BOUNDARY_STRATEGIES[self.config.segmentation].needs_surprise and self.memory_layers:
            if input_ids is not None:
                self._ids.append(input_ids.reshape(1, -1))
            self._hidden.append(hidden.reshape(1, -1, self.hidden_size))
        self.length += hidden.shape[-2]

    # ---- eviction ---------------------------------------------------------------------------------
    def evict(self, log_prob: LogProbFn | None) -> None:
        """Move tokens that left every future query's window to sinks / events (or drop them)."""
        cfg = self.config
        memory = set(self.memory_layers)
        for i, layer in enumerate(self.layers):
            if i not in memory:
                # Sliding-window layers simply forget what left their window.
                excess = (self.length - layer.window + 1) - layer.tail_start
                if excess > 0:
                    layer.drop(excess)
        if not self.memory_layers:
            return
        evict_end = self.length - cfg.n_local + 1  # positions < evict_end are outside every future window
        start = self.pending_start
        n_sinks = min(cfg.n_init, evict_end) - start
        if n_sinks > 0:
            for i in self.memory_layers:
                self.layers[i].to_sinks(n_sinks)
            start += n_sinks
            self.decided = max(self.decided, start)
        if evict_end - start < 1:
            return
        if not cfg.uses_memory:  # StreamingLLM: sinks + window, the rest is forgotten
            for i in self.memory_layers:
                self.layers[i].drop(evict_end - start)
            return
        # Decide boundaries up to evict_end (one further with the reference convention, which marks the
        # token *before* a surprising one).
        horizon = min(self.length, evict_end + (1 if cfg.boundary == "reference" else 0))
        if horizon > self.decided:
            self._decide(max(self.decided, start), horizon, log_prob)
        flags = self.flags[: evict_end - start]
        sizes = cut_events(flags, cfg.min_block_size, cfg.max_block_size)
        if sizes:
            # Make room in every layer's store first (a disk tier may spill, or fail): events are then
            # added to all layers or to none, and no token leaves the window before its store has room.
            for i in self.memory_layers:
                self.layers[i].store.reserve(sum(sizes))
            for i in self.memory_layers:
                self.layers[i].to_events(sizes, cfg.repr_topk)
        consumed = sum(sizes)
        del self.flags[:consumed]
        self._release_aux(self.decided - 1)

    def _decide(self, begin: int, end: int, log_prob: LogProbFn | None) -> None:
        cfg = self.config
        positions = torch.arange(begin, end)
        strategy = BOUNDARY_STRATEGIES[cfg.segmentation]
        surprise = None
        if strategy.needs_surprise:
            surprise = self._surprise(begin, end, log_prob)
        ctx = BoundaryContext(
            positions=positions, surprise=surprise, history=self.surprise_history, config=cfg, generator=self.generator
        )
        new_flags = strategy.decide(ctx).tolist()
        if surprise is not None:
            self.surprise_history = torch.cat([self.surprise_history, surprise])[-int(cfg.surprise_window) :]
            if begin == 0:
                new_flags[0] = False  # the first token has no surprise
        # Flags of tokens [pending_start, begin) already exist; extend to `end`.
        pending = self.pending_start
        self.flags.extend([False] * (end - pending - len(self.flags)))
        for offset, flag in enumerate(new_flags):
            if not flag:
                continue
            pos = begin + offset - (1 if cfg.boundary == "reference" else 0)
            if pos > pending:
                self.flags[pos - pending] = True
        if cfg.refinement is not None:
            self._refine(pending, end)
        self.decided = end

    def _refine(self, pending: int, end: int) -> None:
        cfg = self.config
        bounds = [pending + i for i, f in enumerate(self.flags) if f and i > 0]
        if not bounds:
            return
        layers = [i for i in self.memory_layers if i >= min(cfg.refine_from_layer, self.memory_layers[-1])]

        def keys_fn(a: int, b: int) -> torch.Tensor:
            return torch.stack([self.layers[i].tail_slice(a, b)[0] for i in layers])

        tail_end = self.layers[self.memory_layers[0]].tail_end
        refined = refine_boundaries(
            keys_fn, bounds, pending, min(end + cfg.max_block_size, tail_end), cfg.min_block_size, cfg.refinement
        )
        self.flags = [False] * len(self.flags)
        for pos in refined:
            self.flags[pos - pending] = True

    def _surprise(self, begin: int, end: int, log_prob: LogProbFn | None) -> torch.Tensor:
        """-log p(x_t | x_<t) for t in [begin, end), from stored hidden states at t-1 (fp32 log-softmax)."""
        out = torch.zeros(end - begin, dtype=torch.float32)
        first = max(begin, 1)
        if first >= end:
            return out
        if log_prob is None or len(self._ids) == 0:
            raise ConfigError(
                "surprise segmentation needs input_ids and the LM head; pass input_ids, not inputs_embeds"
            )
        a = first - 1 - self._aux_start
        hidden = self._hidden.view(a, a + end - first)[0]
        targets = self._ids.view(a + 1, a + 1 + end - first)[0]
        out[first - begin :] = log_prob(hidden, targets).neg().float().cpu()
        return out

    def _release_aux(self, keep_from: int) -> None:
        """Hidden states/ids are only needed from the token before the first undecided one."""
        drop = min(keep_from - self._aux_start, len(self._hidden))
        if drop > 0:
            self._hidden.pop_front(drop)
            if len(self._ids) >= drop:
                self._ids.pop_front(drop)
            self._aux_start += drop
