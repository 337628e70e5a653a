"""The memory attention of one layer for one sequence and one chunk of queries.

For queries at positions [s, e) and a window W, a past key at position k is seen exactly once:

* local (true relative rope): the chunk itself, causally; keys in [e-W, s) by every query; keys in the
  band [s-W+1, e-W) by the queries still within W of them;
* memory (every key at one fixed distance ``memory_distance``): the band keys by the queries they left,
  the pending tail tokens older than every window, the sinks, and the retrieved events.

Each memory part is one fused attention call returning its log-sum-exp (see :mod:`memalign.memory.kernels`);
the local window of a memory layer is one blocked pass that merges them and also yields every window
key's attention mass (for representative keys); layers without memory use fused calls for the window too.
The parts merge exactly. The reference instead adds every pending token to every query's global
stage, so query i of a chunk sees ``len_q-1-i`` tokens twice.
"""

from __future__ import annotations

import torch

from memalign.memory.config import EMConfig
from memalign.memory.kernels import attend, merge, window_attention
from memalign.memory.retrieval import (
    contiguity_neighbours,
    select_by_similarity,
    update_contiguity_buffer,
)
from memalign.memory.rope import RopeTable, rotate
from memalign.memory.state import LayerMemory


def retrieve(layer: LayerMemory, q_mem: torch.Tensor, budget: int, config: EMConfig) -> list[int]:
    """Event ids for this chunk: similarity top-k within ``budget`` tokens, plus the contiguity buffer."""
    store = layer.store
    if store is None or len(store) == 0 or budget <= 0:
        layer.last_retrieved = []
        return []
    query = q_mem[0].float().mean(dim=1).reshape(-1)  # mean rotated query per head -> [H*D]
    scores = store.scores(query)
    sizes = store.sizes
    ctg_budget = int(config.contiguity_fraction * budget)
    retrieved = select_by_similarity(scores, sizes, budget - ctg_budget)
    if ctg_budget > 0:
        exclude = set(retrieved)
        fresh = contiguity_neighbours(retrieved, len(store), sizes, ctg_budget, exclude)
        layer.contiguity = update_contiguity_buffer(layer.contiguity, fresh, sizes, ctg_budget, exclude)
        retrieved = retrieved + layer.contiguity
    retrieved = sorted(retrieved)
    layer.last_retrieved = retrieved
    return retrieved


def memory_attention(
    layer: LayerMemory, q: torch.Tensor, start: int, scale: float, rope: RopeTable, config: EMConfig
) -> torch.Tensor:
    """Attention output [1, H, L, D] for queries ``q`` [1, H, L, D] (unrotated) at positions [start, start+L).

    The chunk's own keys must already be in ``layer``'s tail.
    """
    L = q.shape[2]
    s, e, W = start, start + L, layer.window
    lo = max(layer.tail_start, s - W + 1)  # oldest key inside some query's window
    full_from = max(lo, min(s, e - W))  # keys from here to s are inside every query's window
    q_pos = torch.arange(s, e, device=q.device)[:, None]
    band_mask = None  # [L, full_from - lo]: band keys still inside each query's window
    if lo < full_from:
        band_mask = (q_pos - torch.arange(lo, full_from, device=q.device)[None, :]) < W

    memory_parts, event_ids = _memory_parts(layer, q, lo, full_from, band_mask, e, scale, rope, config)
    q_loc = rotate(q, *rope.at(s - lo, e - lo))
    if layer.tail_mass is not None:
        # Memory layers: one pass gives the window attention, the merge with the memory stage and the
        # attention mass of every window key (for representative keys).
        k_loc, v_loc = layer.tail_slice(lo, e)
        k_loc = rotate(k_loc.unsqueeze(0), *rope.at(0, e - lo))[0]
        other = merge(memory_parts, out_dtype=torch.float32) if memory_parts else None
        o, _, mass = window_attention(
            q_loc[0], k_loc, v_loc, scale, s, lo, W, None if other is None else (other[0][0], other[1][0])
        )
        layer.add_mass(mass, lo)
        out = o.unsqueeze(0)
    else:
        out, _ = merge(
            _window_parts(layer, q_loc, lo, full_from, band_mask, s, e, scale, rope) + memory_parts, out_dtype=q.dtype
        )
    # Every tail token older than the local window is attended in the memory stage, so the newest query
    # sees the whole tail when there is a memory stage and just its window otherwise.
    tail_from = layer.tail_start if layer.has_memory_stage else max(lo, e - W)
    layer.last_view = (len(layer.init_k), tail_from, e, event_ids)
    return out


def _window_parts(
    layer: LayerMemory,
    q_loc: torch.Tensor,
    lo: int,
    full_from: int,
    band_mask: torch.Tensor | None,
    s: int,
    e: int,
    scale: float,
    rope: RopeTable,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The local window as fused-kernel parts (no key mass): causal chunk, keys every query sees, the band."""
    L, W = e - s, layer.window
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    k_chunk, v_chunk = layer.tail_slice(s, e)
    k_chunk = rotate(k_chunk.unsqueeze(0), *rope.at(s - lo, e - lo))
    if L <= W:
        parts.append(attend(q_loc, k_chunk, v_chunk.unsqueeze(0), scale, causal=True))
    else:  # only sliding-window layers see forwards longer than their window
        diff = torch.arange(s, e, device=q_loc.device)[:, None] - torch.arange(s, e, device=q_loc.device)[None, :]
        parts.append(attend(q_loc, k_chunk, v_chunk.unsqueeze(0), scale, mask=(diff >= 0) & (diff < W)))
    if full_from < s:
        k_full, v_full = layer.tail_slice(full_from, s)
        k_full = rotate(k_full.unsqueeze(0), *rope.at(full_from - lo, s - lo))
        parts.append(attend(q_loc, k_full, v_full.unsqueeze(0), scale))
    if band_mask is not None:
        k_band, v_band = layer.tail_slice(lo, full_from)
        k_band = rotate(k_band.unsqueeze(0), *rope.at(0, full_from - lo))
        parts.append(attend(q_loc, k_band, v_band.unsqueeze(0), scale, mask=band_mask))
    return parts


def _memory_parts(
    layer: LayerMemory,
    q: torch.Tensor,
    lo: int,
    full_from: int,
    band_mask: torch.Tensor | None,
    e: int,
    scale: float,
    rope: RopeTable,
    config: EMConfig,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[int]]:
    """The memory stage (every key at distance ``memory_distance``): sinks, pending tail tokens and retrieved
    events in one part, and the band keys for the queries that have left them; plus the event ids."""
    W = layer.window
    pending_tokens = lo - layer.tail_start
    if not layer.has_memory_stage or not (
        pending_tokens > 0
        or band_mask is not None
        or len(layer.init_k) > 0
        or (layer.store is not None and len(layer.store) > 0)
    ):
        return [], []
    dist = int(config.memory_distance)
    q_mem = rotate(q, *rope.at(dist, dist + 1))
    budget = config.n_mem - max(0, (e - W + 1) - layer.tail_start)
    event_ids = retrieve(layer, q_mem, budget, config) if layer.use_memory else []
    keys = [layer.init_k.view()]
    values = [layer.init_v.view()]
    if pending_tokens > 0:
        k_p, v_p = layer.tail_slice(layer.tail_start, lo)
        keys.append(k_p)
        values.append(v_p)
    if event_ids:
        k_e, v_e = layer.store.gather(event_ids)
        keys.append(k_e)
        values.append(v_e)
    k_mem = torch.cat(keys, dim=1) if len(keys) > 1 else keys[0]
    v_mem = torch.cat(values, dim=1) if len(values) > 1 else values[0]
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    if k_mem.shape[1] > 0:
        k_mem = k_mem.unsqueeze(0)
        if not rope.identity_at_zero:
            k_mem = rotate(k_mem, *rope.at(0, 1))
        parts.append(attend(q_mem, k_mem, v_mem.unsqueeze(0), scale))
    if band_mask is not None:
        k_band, v_band = layer.tail_slice(lo, full_from)
        k_band = k_band.unsqueeze(0)
        if not rope.identity_at_zero:
            k_band = rotate(k_band, *rope.at(0, 1))
        parts.append(attend(q_mem, k_band, v_band.unsqueeze(0), scale, mask=~band_mask))
    return parts, event_ids
