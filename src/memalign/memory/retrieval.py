"""Which events a chunk of queries attends: similarity top-k within a token budget + contiguity buffer."""

from __future__ import annotations

import torch


def select_by_similarity(scores: torch.Tensor, sizes: torch.Tensor, budget: int) -> list[int]:
    """Events in descending score order, greedily, while their total size stays within ``budget`` tokens.

    One ``topk`` over just enough candidates (the budget cannot hold more than budget/min_size events)
    instead of a full sort; an event that would cross the budget is skipped (the budget is a hard bound,
    unlike the reference which may keep the crossing event).
    """
    n = scores.numel()
    if n == 0 or budget <= 0:
        return []
    if int(sizes.sum()) <= budget:
        return list(range(n))
    k = min(n, budget // max(int(sizes.min()), 1) + 1)
    top = torch.topk(scores.float(), k).indices.cpu()
    cum = sizes[top].cumsum(0)
    return top[cum <= budget].tolist()


def contiguity_neighbours(
    ranked: list[int], num_events: int, sizes: torch.Tensor, budget: int, exclude: set[int]
) -> list[int]:
    """Neighbours (next, then previous) of the retrieved events in similarity order, within ``budget``."""
    chosen: list[int] = []
    used = 0
    taken = set(exclude)
    for idx in ranked:
        for nb in (idx + 1, idx - 1):
            if 0 <= nb < num_events and nb not in taken:
                size = int(sizes[nb])
                if used + size <= budget:
                    chosen.append(nb)
                    taken.add(nb)
                    used += size
    return chosen


def update_contiguity_buffer(
    old: list[int], new: list[int], sizes: torch.Tensor, budget: int, exclude: set[int]
) -> list[int]:
    """The paper's queue: new neighbours first, then the previous buffer's events while they fit.

    Entries already retrieved by similarity this step are dropped, so no event is attended twice.
    """
    buffer = [i for i in new if i not in exclude]
    used = sum(int(sizes[i]) for i in buffer)
    seen = set(buffer)
    for idx in old:
        if idx in exclude or idx in seen:
            continue
        size = int(sizes[idx])
        if used + size > budget:
            break
        buffer.append(idx)
        seen.add(idx)
        used += size
    return buffer
