"""Per-subject evaluation records and the per-mode summary (PAlign's log fields plus the fixed metrics).

A record holds one mode's predictions for one person on the held-out items and everything computed
from them: per-trait MAE against the *raw* answers (missing answers excluded and counted), their sum
(PAlign's Table-1 score), the same for argmax (rounded) predictions, per-facet MAE, the per-person
correlation between predicted and actual answers, and the model's and the person's trait scores.

The summary keeps PAlign's names — ``mean_X``/``std_X`` (the answers' trait score over subjects) and
``mean_X_abs``/``std_X_abs`` (the per-trait MAE over subjects; ``mean_X_abs`` is Table 1) — and adds
``sum_abs``, the across-subject correlation of model and person trait scores, counts and timing.

A subject with no scored item (no answers on the test items, or every prediction unparsed under
``exclude``) has no error to report: its record carries NaN sums (``null`` in JSON), not a perfect 0, and
the summary leaves it out of every mean and lists it under ``unscored_subjects``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from memalign.persona.instruments import Instrument
from memalign.persona.metrics import alignment_score, item_errors
from memalign.persona.subjects import SubjectAnswers

TRAITS = ("A", "C", "E", "N", "O")  # PAlign's order


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation; NaN when fewer than 3 pairs or either side is constant."""
    if len(xs) < 3:
        return math.nan
    try:
        return statistics.correlation(xs, ys)
    except statistics.StatisticsError:
        return math.nan


def _ok(values: Iterable[float | None]) -> list[float]:
    """Drop missing values (NaN in memory, null once written to JSON)."""
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def _mean(values: Iterable[float | None]) -> float:
    values = _ok(values)
    return statistics.fmean(values) if values else math.nan


def _std(values: Iterable[float | None]) -> float:
    values = _ok(values)
    return statistics.pstdev(values) if len(values) > 1 else (0.0 if values else math.nan)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def keyed_value(value: float, keyed: int) -> float:
    """An answer on the 1-5 scale turned toward the trait (its own inverse)."""
    return value if keyed > 0 else 6.0 - value


def subject_record(
    person: SubjectAnswers,
    test_ids: Sequence[int],
    instrument: Instrument,
    expected: Mapping[int, float | None],
    argmax: Mapping[int, float | None],
    unparsed_policy: str = "midpoint",
) -> dict[str, Any]:
    """Metrics of one person's predicted answers (``None`` = the model gave no parsable answer).

    ``unparsed_policy``: ``midpoint`` scores an unparsed answer as 3 ("Neither"), so a model that does
    not answer is not rewarded for it; ``exclude`` leaves it out (as PAlign did), and the count is
    reported either way.
    """
    unparsed = [i for i in test_ids if expected.get(i) is None]
    missing = [i for i in test_ids if person.raw_answer(i) is None]

    def resolved(preds: Mapping[int, float | None]) -> dict[int, float]:
        out = {}
        for i in test_ids:
            value = preds.get(i)
            if value is None:
                if unparsed_policy == "exclude":
                    continue
                value = 3.0
            out[i] = float(value)
        return out

    record: dict[str, Any] = {
        "subject": person.subject_id,
        "n_test_items": len(test_ids),
        "n_missing_answers": len(missing),
        "n_unparsed": len(unparsed),
    }
    for kind, preds in (("", resolved(expected)), ("_argmax", resolved(argmax))):
        score = alignment_score(preds, person, preds, instrument)
        trait_mae = {t: score.domain_mae[t] for t in TRAITS if t in score.domain_mae}
        record[f"trait_mae{kind}"] = trait_mae
        # nothing scored is no error at all, not an error of 0
        record[f"trait_sum{kind}"] = sum(trait_mae.values()) if score.n_items else math.nan
        record[f"mae{kind}"] = score.mae
        if not kind:
            errors = item_errors(preds, person, preds)
            by_facet: dict[str, list[float]] = {}
            for i, err in errors.items():
                by_facet.setdefault(instrument.item(i).facet_key, []).append(err)
            record["n_scored"] = score.n_items
            record["facet_mae"] = {f: statistics.fmean(v) for f, v in sorted(by_facet.items())}
            pairs = [(preds[i], person.raw_answer(i)) for i in errors]
            record["r_items"] = pearson([p for p, _ in pairs], [float(a) for _, a in pairs])
            model_trait: dict[str, list[float]] = {}
            person_trait: dict[str, list[float]] = {}
            for i, value in preds.items():
                item = instrument.item(i)
                model_trait.setdefault(item.domain, []).append(keyed_value(value, item.keyed))
                if (raw := person.raw_answer(i)) is not None:
                    person_trait.setdefault(item.domain, []).append(keyed_value(raw, item.keyed))
            record["model_trait"] = {t: statistics.fmean(model_trait[t]) for t in TRAITS if t in model_trait}
            record["person_trait"] = {t: statistics.fmean(person_trait[t]) for t in TRAITS if t in person_trait}
    return record


def is_scored(record: Mapping[str, Any]) -> bool:
    """Whether the record has at least one scored item (else it says nothing about the mode's error)."""
    return bool(record.get("n_scored"))


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """PAlign's ``score`` block (``mean_X``, ``std_X``, ``mean_X_abs``, ``std_X_abs``) plus our fields.

    Every mean is over scored subjects only; ``n_subjects`` counts all records, ``n_unscored_subjects``
    and ``unscored_subjects`` the ones left out.
    """
    all_records, records = records, [r for r in records if is_scored(r)]
    unscored = [str(r.get("subject")) for r in all_records if not is_scored(r)]
    score: dict[str, float] = {}
    for t in TRAITS:
        traits = [_nan(r["model_trait"].get(t)) for r in records]
        errors = [_nan(r["trait_mae"].get(t)) for r in records]
        errors_argmax = [_nan(r["trait_mae_argmax"].get(t)) for r in records]
        score.update(
            {
                f"mean_{t}": _mean(traits),
                f"std_{t}": _std(traits),
                f"mean_{t}_abs": _mean(errors),
                f"std_{t}_abs": _std(errors),
                f"mean_{t}_abs_argmax": _mean(errors_argmax),
            }
        )
        persons = [_nan(r["person_trait"].get(t)) for r in records]
        pairs = [(m, p) for m, p in zip(traits, persons, strict=True) if not (math.isnan(m) or math.isnan(p))]
        # A mode whose trait score barely moves between people (NO_CHANGE, item-mean) has no meaningful
        # correlation with them: report it as undefined rather than as the sign of rounding noise.
        spread = _std(m for m, _ in pairs) if pairs else 0.0
        score[f"r_trait_{t}"] = pearson([m for m, _ in pairs], [p for _, p in pairs]) if spread > 0.01 else math.nan
    score["sum_abs"] = sum(score[f"mean_{t}_abs"] for t in TRAITS)
    score["sum_abs_argmax"] = sum(score[f"mean_{t}_abs_argmax"] for t in TRAITS)
    score["std_sum_abs"] = _std(r["trait_sum"] for r in records)
    score["mae"] = _mean(r["mae"] for r in records)
    score["r_items"] = _mean(r["r_items"] for r in records)
    seconds = [r["seconds"] for r in all_records if "seconds" in r]
    return {
        "score": score,
        "mean": {t: [r["model_trait"].get(t) for r in all_records] for t in TRAITS},  # one per record
        "n_subjects": len(all_records),
        "n_scored_subjects": len(records),
        "n_unscored_subjects": len(unscored),
        "unscored_subjects": unscored,
        "n_scored": sum(r["n_scored"] for r in all_records),
        "n_missing_answers": sum(r["n_missing_answers"] for r in all_records),
        "n_unparsed": sum(r["n_unparsed"] for r in all_records),
        "seconds_per_subject": _mean(seconds) if seconds else math.nan,
    }
