"""Paired comparison of methods: wins, ties and losses over the same prompts, with an exact sign test.

Cells with one to five samples cannot rank close methods, and cells of different methods often hold
different numbers of samples. The head-to-head pairs *items* instead: the same prompt (task, length,
seed, sample) answered by two methods, counted over every cell both have -- wins, ties and losses of
one method against the other, which is what "EM-LLM >= InfLLM >= streaming" claims -- with the two-sided
exact sign test over the strict differences (ties dropped), so a reader can see how little a handful
of wins proves.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from memalign.bench.results import Items
from memalign.reporting.optional import import_extra


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test: how likely at least this lopsided a split of the strict differences
    is if neither method were better (1.0 when there are none). Ties carry no sign and are dropped."""
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses are counts, got {wins} and {losses}")
    if wins + losses == 0:
        return 1.0
    stats = import_extra("scipy.stats", "the head-to-head sign test")  # slow to import: only when needed
    return float(stats.binomtest(wins, wins + losses, 0.5).pvalue)


@dataclass(frozen=True)
class Pairing:
    """Method ``a`` against method ``b`` of one model over the ``n`` items both answered."""

    model: str
    a: str
    b: str
    n: int
    score_a: float  # mean score x100 over the paired items
    score_b: float
    wins: int  # items where a scored higher than b
    ties: int
    losses: int
    p_sign: float


def head_to_head(items: Items) -> list[Pairing]:
    """Every pair of methods of a model that answered at least one common item, models and labels in name
    order: n paired items, each method's mean score (x100) over them, wins / ties / losses of ``a``
    against ``b`` and the sign test's p-value over wins and losses."""
    by_model: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (model, label), scores in items.items():
        by_model[model][label] = scores
    rows = []
    for model, methods in sorted(by_model.items()):
        labels = sorted(methods)
        for i, a in enumerate(labels):
            for b in labels[i + 1 :]:
                shared = sorted(methods[a].keys() & methods[b].keys())
                if shared:
                    rows.append(_pair(model, a, b, [(methods[a][k], methods[b][k]) for k in shared]))
    return rows


def _pair(model: str, a: str, b: str, pairs: list[tuple[float, float]]) -> Pairing:
    wins, losses = sum(x > y for x, y in pairs), sum(x < y for x, y in pairs)
    return Pairing(
        model=model,
        a=a,
        b=b,
        n=len(pairs),
        score_a=100 * sum(x for x, _ in pairs) / len(pairs),
        score_b=100 * sum(y for _, y in pairs) / len(pairs),
        wins=wins,
        ties=len(pairs) - wins - losses,
        losses=losses,
        p_sign=sign_test_p(wins, losses),
    )
