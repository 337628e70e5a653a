"""Event boundaries: surprise thresholds, boundary strategies (a registry) and the block cutter.

All functions here are pure (tensors/ints in, tensors/ints out) so the semantics are unit-testable
without a model: ``surprise_thresholds`` (sliding mean + gamma * std, as the paper), the strategies
that turn a token stream into boundary flags, and ``cut_events`` (min/max block sizes, merge of short
segments, split of long ones, the last open segment waits) exactly as the reference's update_memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from memalign.registry import Registry

if TYPE_CHECKING:  # the config validates its segmentation against this module's registry
    from memalign.memory.config import EMConfig


def surprise_thresholds(history: torch.Tensor, new: torch.Tensor, window: int, gamma: float) -> torch.Tensor:
    """Threshold of each value of ``new``: mean + gamma * std (unbiased) of the ``window`` values before it.

    ``history`` holds the values that precede ``new`` (only its last ``window`` matter). Values with
    fewer than two predecessors get +inf (no boundary can be decided yet). float64 prefix sums keep
    the sliding statistics exact enough over long streams.
    """
    hist = history[-window:].double()
    values = torch.cat([hist, new.double()])
    h, n = hist.numel(), new.numel()
    zero = values.new_zeros(1)
    csum = torch.cat([zero, values.cumsum(0)])
    csq = torch.cat([zero, (values * values).cumsum(0)])
    idx = torch.arange(h, h + n, device=values.device)
    lo = (idx - window).clamp_min(0)
    count = (idx - lo).double()
    mean = (csum[idx] - csum[lo]) / count.clamp_min(1)
    var = ((csq[idx] - csq[lo]) - count * mean * mean) / (count - 1).clamp_min(1)
    thr = mean + gamma * var.clamp_min(0).sqrt()
    return torch.where(count >= 2, thr, torch.full_like(thr, float("inf"))).to(new.dtype)


def cut_events(flags: torch.Tensor | list[bool], min_size: int, max_size: int) -> list[int]:
    """Sizes of the events to cut from the front of pending tokens; the remainder keeps waiting.

    ``flags[i]`` True means an event starts at pending token ``i`` (``flags[0]`` is ignored: the
    pending run always starts an event). Segments shorter than ``min(min_size, len)`` merge into the
    next; any accumulation reaching ``max_size`` emits blocks of exactly ``max_size``; the last segment
    (after the final boundary) is only cut in ``max_size`` pieces, the rest waits for its boundary.
    Reference example: min 8, max 128, boundaries {3, 20, 25, 200} over 300 tokens -> [20, 128, 52], 100 wait.
    """
    flags_t = torch.as_tensor(flags, dtype=torch.bool)
    n = int(flags_t.numel())
    if n == 0:
        return []
    bounds = torch.nonzero(flags_t[1:]).flatten().add_(1).tolist()
    edges = [0, *bounds, n]
    sizes: list[int] = []
    acc = 0
    last = len(edges) - 2
    for i in range(len(edges) - 1):
        acc += edges[i + 1] - edges[i]
        while acc >= max_size:
            sizes.append(max_size)
            acc -= max_size
        if i == last or acc < min_size:
            continue
        sizes.append(acc)
        acc = 0
    return sizes


# ---- boundary strategies --------------------------------------------------------------------------


@dataclass
class BoundaryContext:
    """What a strategy may look at for the tokens whose boundary flags are being decided."""

    positions: torch.Tensor  # absolute positions of the tokens (1-D, int64)
    surprise: torch.Tensor | None  # -log p(x_t | x_<t) per token (fp32), None if not computed
    history: torch.Tensor  # surprise of earlier tokens (fp32), for thresholds
    config: EMConfig
    generator: torch.Generator


BoundaryFn = Callable[[BoundaryContext], torch.Tensor]


@dataclass(frozen=True)
class BoundaryStrategy:
    """A registered strategy: the function that flags boundaries, and whether it reads surprise (then the
    sequence keeps the hidden states and ids that surprise is computed from)."""

    decide: BoundaryFn
    needs_surprise: bool = False


BOUNDARY_STRATEGIES: Registry[BoundaryStrategy] = Registry("boundary strategy")


def register_boundary(name: str, needs_surprise: bool = False) -> Callable[[BoundaryFn], BoundaryFn]:
    """Register ``fn`` as the boundary strategy ``name`` (``EMConfig.segmentation``); a taken name raises."""

    def deco(fn: BoundaryFn) -> BoundaryFn:
        BOUNDARY_STRATEGIES.add(name, BoundaryStrategy(fn, needs_surprise))
        return fn

    return deco


@register_boundary("surprise", needs_surprise=True)
def surprise_boundaries(ctx: BoundaryContext) -> torch.Tensor:
    """A token is a boundary when its surprise exceeds mean + gamma*std of the preceding window."""
    if ctx.surprise is None:
        raise ValueError("the surprise strategy needs per-token surprise (registered with needs_surprise=True)")
    cfg = ctx.config
    thr = surprise_thresholds(ctx.history, ctx.surprise, int(cfg.surprise_window), cfg.gamma)
    return ctx.surprise > thr


@register_boundary("uniform")
def uniform_boundaries(ctx: BoundaryContext) -> torch.Tensor:
    """No boundaries: ``cut_events`` then cuts fixed ``max_block_size`` blocks (InfLLM)."""
    return torch.zeros(ctx.positions.numel(), dtype=torch.bool)


@register_boundary("random")
def random_boundaries(ctx: BoundaryContext) -> torch.Tensor:
    """Seeded random boundaries with mean spacing (min+max)/2 (an ablation of surprise)."""
    mean_size = (ctx.config.min_block_size + ctx.config.max_block_size) / 2
    draws = torch.rand(ctx.positions.numel(), generator=ctx.generator)
    return draws < (1.0 / mean_size)
