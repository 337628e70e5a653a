"""Alignment metrics: how far predicted answers are from a person's raw answers on held-out items.

The reference metric (PAlign Table 1) is the per-domain mean absolute error summed over the five
domains ("trait-sum"). Two fixes: the target is the *raw* answer (PAlign compared with recoded values),
and missing answers are left out (PAlign scored 0 = missing as a target, adding errors of up to 5).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from memalign.errors import ConfigError
from memalign.persona.instruments import Instrument
from memalign.persona.subjects import SubjectAnswers


def item_errors(predictions: Mapping[int, float], subject: SubjectAnswers, item_ids: Iterable[int]) -> dict[int, float]:
    """|prediction - raw answer| per item with a non-missing answer; every such item needs a prediction."""
    errors = {}
    for item_id in item_ids:
        raw = subject.raw_answer(item_id)
        if raw is None:
            continue
        if item_id not in predictions:
            raise ConfigError(f"no prediction for item {item_id}")
        errors[item_id] = abs(float(predictions[item_id]) - raw)
    return errors


@dataclass(frozen=True)
class AlignmentScore:
    """MAE over items, per-domain MAE and their sum (PAlign's metric), and how many items were scored."""

    mae: float
    domain_mae: dict[str, float]
    n_items: int

    @property
    def trait_sum(self) -> float:
        return sum(self.domain_mae.values())


def alignment_score(
    predictions: Mapping[int, float], subject: SubjectAnswers, item_ids: Iterable[int], instrument: Instrument
) -> AlignmentScore:
    errors = item_errors(predictions, subject, item_ids)
    by_domain: dict[str, list[float]] = {}
    for item_id, err in errors.items():
        by_domain.setdefault(instrument.item(item_id).domain, []).append(err)
    domain = {d: statistics.fmean(by_domain[d]) for d in instrument.domains if d in by_domain}
    mae = statistics.fmean(errors.values()) if errors else math.nan
    return AlignmentScore(mae, domain, len(errors))


def mean_score(scores: Iterable[AlignmentScore]) -> AlignmentScore:
    """Average over people (each person weighs the same, as in PAlign's table)."""
    scores = list(scores)
    if not scores:
        raise ConfigError("no scores to average")
    domains = list(dict.fromkeys(d for s in scores for d in s.domain_mae))
    domain = {d: statistics.fmean(s.domain_mae[d] for s in scores if d in s.domain_mae) for d in domains}
    return AlignmentScore(statistics.fmean(s.mae for s in scores), domain, sum(s.n_items for s in scores))
