"""Per-person calibration: a mode's answers mapped through one line per trait fitted on the training items.

An unsteered instruct model answers every item at nearly the same level ("Moderately Accurate"), but the
*variation* of its expected answers from item to item still follows the trait. A line per trait, fitted
on the person's training answers, moves that variation to the person's level and spread without ever
seeing a test answer; the ``+calibration`` modes measure how much of an alignment method's gain that
simple map already explains.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from memalign.persona.evaluation.records import keyed_value
from memalign.persona.evaluation.setup import ModePrediction
from memalign.persona.instruments import Instrument
from memalign.persona.subjects import SubjectAnswers


def calibrate(
    train: Mapping[int, float | None],
    test: Mapping[int, float | None],
    person: SubjectAnswers,
    instrument: Instrument,
    l2: float = 0.1,
) -> tuple[dict[int, float | None], dict[str, list[float]]]:
    """Per trait, fit keyed answer ~ a + b * keyed prediction on the training items; apply to the test items.

    In the keyed (trait) direction the model's item-to-item variation lines up with the trait, so one
    line per trait serves both keyings. ``l2`` shrinks the slope (an unsteered model's expected answers
    vary little, and a free slope through 24 points would amplify noise). Output clamped to 1..5.
    Returns the calibrated test answers and ``{domain: [intercept, slope]}``.
    """

    def keyed(value: float, item_id: int) -> float:
        return keyed_value(value, instrument.item(item_id).keyed)

    lines: dict[str, list[float]] = {}
    for domain in instrument.domains:
        pairs = [
            (keyed(p, i), keyed(float(raw), i))
            for i, p in train.items()
            if p is not None and instrument.item(i).domain == domain and (raw := person.raw_answer(i)) is not None
        ]
        if not pairs:
            continue
        xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
        slope = sxy / (sxx + l2) if sxx + l2 > 0 else 0.0
        lines[domain] = [my - slope * mx, slope]
    out: dict[int, float | None] = {}
    for i, p in test.items():
        line = lines.get(instrument.item(i).domain)
        if p is None or line is None:
            out[i] = p
            continue
        value = min(5.0, max(1.0, line[0] + line[1] * keyed(p, i)))
        out[i] = keyed(value, i)  # keyed() is its own inverse
    return out, lines


def calibrated_prediction(
    test: ModePrediction, train: ModePrediction, person: SubjectAnswers, instrument: Instrument, l2: float = 0.1
) -> ModePrediction:
    """``test`` through the lines :func:`calibrate` fits on ``train``; argmax is the rounded calibrated answer.

    The lines go into ``info["calibration"]`` so a record shows what the map did for that person.
    """
    expected, lines = calibrate(train.expected, test.expected, person, instrument, l2)
    argmax = {i: (None if v is None else float(min(5, max(1, round(v))))) for i, v in expected.items()}
    return ModePrediction(expected, argmax, test.option_mass, {**test.info, "calibration": lines})
