"""Alignment metrics and the non-LLM reference predictors."""

from __future__ import annotations

import math

import pytest
import torch

from memalign.errors import ConfigError, DuplicateNameError, UnknownNameError
from memalign.persona import Instrument, Item, SubjectAnswers
from memalign.persona.metrics import alignment_score, item_errors, mean_score
from memalign.persona.predictors import PREDICTORS, get_predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Facet N1: items 1 (+), 2 (-), 3 (+ held out), 4 (- held out); facet E1: items 5 (+), 6 (+ held out).
ITEMS = Instrument(
    "t",
    (
        Item(1, "worry", "N", "N1", 1),
        Item(2, "calm", "N", "N1", -1),
        Item(3, "fear", "N", "N1", 1),
        Item(4, "relaxed", "N", "N1", -1),
        Item(5, "talk", "E", "E1", 1),
        Item(6, "party", "E", "E1", 1),
    ),
)
TRAIN, TEST = (1, 2, 5), (3, 4, 6)


def test_metrics_skip_missing_and_sum_domains():
    person = SubjectAnswers("p", {3: 5, 4: None, 6: 2})
    predictions = {3: 4.0, 4: 1.0, 6: 4.5}
    assert item_errors(predictions, person, TEST) == {3: 1.0, 6: 2.5}
    score = alignment_score(predictions, person, TEST, ITEMS)
    assert score.n_items == 2 and score.domain_mae == {"N": 1.0, "E": 2.5}
    assert math.isclose(score.trait_sum, 3.5) and math.isclose(score.mae, 1.75)
    both = mean_score([score, alignment_score({3: 5.0, 4: 1.0, 6: 2.0}, person, TEST, ITEMS)])
    assert math.isclose(both.domain_mae["N"], 0.5) and math.isclose(both.mae, 0.875)
    with pytest.raises(ConfigError, match="no prediction for item 6"):
        item_errors({3: 1.0}, person, TEST)


def test_constant_item_mean_and_own_facet_mean():
    high_n = SubjectAnswers("a", {1: 5, 2: 1, 3: 5, 4: 1, 5: 2, 6: 2})  # keyed N = 5 everywhere, E = 2
    other = SubjectAnswers("b", {1: 1, 2: 5, 3: 1, 4: 5, 5: 4, 6: 4})
    population = [high_n, other]
    assert get_predictor("constant").fit(population, TRAIN, TEST).predict(high_n) == {3: 3.0, 4: 3.0, 6: 3.0}
    # item_mean leaves the person out: only "b" remains.
    assert get_predictor("item_mean").fit(population, TRAIN, TEST).predict(high_n) == {3: 1.0, 4: 5.0, 6: 4.0}
    own = get_predictor("own_facet_mean", instrument=ITEMS).fit(population, TRAIN, TEST).predict(high_n)
    assert own == {3: 5.0, 4: 1.0, 6: 2.0}  # keyed level 5 on N1 -> raw 1 on the reverse-keyed item 4
    with pytest.raises(ConfigError, match="needs the instrument"):
        get_predictor("own_facet_mean").fit(population, TRAIN, TEST).predict(high_n)
    with pytest.raises(ConfigError, match="unknown predictor"):
        get_predictor("oracle")
    assert set(PREDICTORS) == {"constant", "item_mean", "own_facet_mean", "ridge"}


def test_ridge_learns_a_population_relation():
    gen = torch.Generator().manual_seed(0)
    people = []
    for n in range(60):
        a, b = (int(v) for v in torch.randint(1, 6, (2,), generator=gen))
        # Held-out item 3 copies item 1, item 6 copies item 5, item 4 mirrors item 2.
        people.append(SubjectAnswers(str(n), {1: a, 2: b, 5: 6 - a, 3: a, 4: 6 - b, 6: 6 - a}))
    ridge = get_predictor("ridge", l2=0.1).fit(people, TRAIN, TEST)
    for person in people[:5]:
        got = ridge.predict(person)
        want = {i: float(person.raw_answer(i)) for i in TEST}
        assert all(abs(got[i] - want[i]) < 0.05 for i in TEST), (got, want)


def test_predictor_registry_lists_known_names_and_refuses_duplicates_and_bad_parameters():
    with pytest.raises(UnknownNameError, match="known: constant, item_mean, own_facet_mean, ridge"):
        get_predictor("oracle")
    with pytest.raises(DuplicateNameError, match="'ridge' is already registered"):
        PREDICTORS.add("ridge", PREDICTORS["constant"])
    assert PREDICTORS["ridge"].__name__ == "RidgePredictor"  # the refused entry did not replace it
    with pytest.raises(ConfigError, match="predictor 'constant' has no parameter 'l2'; it takes instrument, value"):
        get_predictor("constant", l2=1.0)
    ridge = get_predictor("ridge", l2=3.0)
    assert (ridge.name, ridge.l2) == ("ridge", 3.0)
