"""Boundary refinement by graph modularity or conductance of key similarity (EM-LLM section 3.3).

For each surprise boundary beta (previous refined boundary alpha) the window
[alpha - (beta-alpha)/2, beta + (beta-alpha)/2) of token-token key similarity is split in two
communities at every candidate t in [alpha + min_size, beta] at once: with 2-D prefix sums each
candidate's modularity/conductance is O(1), so one window costs O(W^2) (the reference evaluates each
candidate separately with a host copy, O(W^3)). Unlike the reference the boundary may stay at beta.
Similarity is cosine similarity of keys averaged over the chosen layers and KV heads, clamped at 0:
graph metrics need non-negative weights (the reference uses raw, possibly negative dot products).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from memalign.registry import Registry

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RefinementMetric:
    """A graph metric of a two-community split: ``scores(adj, candidates)`` and whether higher is better."""

    scores: ScoreFn
    maximise: bool


REFINEMENT_METRICS: Registry[RefinementMetric] = Registry("refinement metric")


def key_similarity(keys: torch.Tensor) -> torch.Tensor:
    """[layers, heads, W, D] keys -> [W, W] non-negative similarity (mean cosine over layers and heads)."""
    k = torch.nn.functional.normalize(keys.float(), dim=-1)
    sim = (k @ k.transpose(-1, -2)).mean(dim=(0, 1))
    return sim.clamp_min_(0.0)


def _prefix2d(adj: torch.Tensor) -> torch.Tensor:
    p = adj.double().cumsum(0).cumsum(1)
    return torch.nn.functional.pad(p, (1, 0, 1, 0))


def modularity_scores(adj: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Newman modularity of the partition {[0,t), [t,W)} for every t in ``candidates``."""
    P = _prefix2d(adj)
    W = adj.shape[0]
    two_m = P[W, W].clamp_min(1e-12)
    t = candidates
    intra_left = P[t, t]
    intra_right = P[W, W] - P[t, W] - P[W, t] + P[t, t]
    deg_left = P[t, W]
    deg_right = two_m - deg_left
    return ((intra_left + intra_right) - (deg_left**2 + deg_right**2) / two_m) / two_m


def conductance_scores(adj: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Conductance cut(S, S') / min(vol S, vol S') of {[0,t), [t,W)} (lower is a better split)."""
    P = _prefix2d(adj)
    W = adj.shape[0]
    t = candidates
    cut = P[t, W] - P[t, t]
    vol_left = P[t, W]
    vol_right = P[W, W] - vol_left
    return cut / torch.minimum(vol_left, vol_right).clamp_min(1e-12)


REFINEMENT_METRICS.add("modularity", RefinementMetric(modularity_scores, maximise=True))
REFINEMENT_METRICS.add("conductance", RefinementMetric(conductance_scores, maximise=False))


def refine_boundary(adj: torch.Tensor, lo: int, hi: int, metric: str) -> int:
    """Best split index t in [lo, hi] of the window graph ``adj`` (ties: the latest, i.e. closest to surprise)."""
    entry = REFINEMENT_METRICS[metric]
    candidates = torch.arange(lo, hi + 1)
    scores = entry.scores(adj, candidates)
    if not entry.maximise:
        scores = -scores
    flipped = torch.flip(scores, [0])
    return int(candidates[-1 - int(torch.argmax(flipped))])


def refine_boundaries(
    keys_fn: Callable[[int, int], torch.Tensor], boundaries: list[int], start: int, end: int, min_size: int, metric: str
) -> list[int]:
    """Refine absolute boundary positions in order. ``keys_fn(a, b)`` gives [layers, heads, b-a, D] keys.

    ``start`` is the position where the current open event began (the first alpha); windows are
    clipped to ``[start, end)`` (keys that exist).
    """
    refined: list[int] = []
    alpha = start
    for beta in boundaries:
        if beta - alpha < min_size:
            continue  # too close to the previous boundary: cut_events would merge it anyway
        half = (beta - alpha) // 2
        s, e = max(start, alpha - half), min(end, beta + half)
        adj = key_similarity(keys_fn(s, e))
        t = refine_boundary(adj, alpha + min_size - s, beta - s, metric) + s
        refined.append(t)
        alpha = t
    return refined
