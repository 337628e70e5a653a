"""Reference predictors without a language model: the numbers any LLM-based alignment has to beat.

Each predicts a person's raw answers on held-out items from their answers on the training items (and,
for the population-based ones, from *other* people's answers). They are looked up by name in
:data:`PREDICTORS` (a :class:`~memalign.registry.Registry`: an unknown name lists the known ones), so an
evaluation can run "every mode" uniformly.

``constant``       always the scale midpoint (3).
``item_mean``      each held-out item's mean raw answer over the population (the person left out).
``own_facet_mean`` the person's mean keyed score on the training items of the same facet (falling back to
                   the domain, then to 3), turned back into a raw answer for the item's keying.
``ridge``          ridge regression from the 120 training answers to each held-out answer, fit on the
                   population (the person left out); missing answers imputed with the item mean.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from memalign.errors import ConfigError
from memalign.persona.instruments import Instrument
from memalign.persona.subjects import SubjectAnswers
from memalign.registry import Registry


@dataclass
class Predictor:
    """``fit(population, train_ids, test_ids)`` once, then ``predict(person)`` -> {test item: answer}."""

    name: str = "predictor"
    instrument: Instrument | None = field(default=None, repr=False)

    def fit(self, population: Sequence[SubjectAnswers], train_ids: Sequence[int], test_ids: Sequence[int]) -> Predictor:
        self.train_ids, self.test_ids = tuple(train_ids), tuple(test_ids)
        self.population = list(population)
        return self

    def predict(self, person: SubjectAnswers) -> dict[int, float]:
        raise NotImplementedError


PREDICTORS: Registry[type[Predictor]] = Registry("predictor")


def get_predictor(name: str, **kwargs: Any) -> Predictor:
    """A new predictor called ``name`` with ``kwargs`` as its parameters (``instrument``, ``l2``, ...)."""
    cls = PREDICTORS[name]
    accepted = {f.name for f in fields(cls) if f.init and f.name != "name"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(f"predictor {name!r} has no parameter {unknown[0]!r}; it takes {', '.join(sorted(accepted))}")
    return cls(name=PREDICTORS.resolve(name), **kwargs)


def _others(population: Sequence[SubjectAnswers], person: SubjectAnswers) -> list[SubjectAnswers]:
    return [p for p in population if p is not person and p.subject_id != person.subject_id]


@PREDICTORS.register("constant")
@dataclass
class ConstantPredictor(Predictor):
    value: float = 3.0

    def predict(self, person: SubjectAnswers) -> dict[int, float]:
        return {i: self.value for i in self.test_ids}


@PREDICTORS.register("item_mean")
@dataclass
class ItemMeanPredictor(Predictor):
    def predict(self, person: SubjectAnswers) -> dict[int, float]:
        others = _others(self.population, person)
        out = {}
        for i in self.test_ids:
            values = [v for v in (p.raw_answer(i) for p in others) if v is not None]
            out[i] = statistics.fmean(values) if values else 3.0
        return out


@PREDICTORS.register("own_facet_mean")
@dataclass
class OwnFacetMeanPredictor(Predictor):
    def predict(self, person: SubjectAnswers) -> dict[int, float]:
        if self.instrument is None:
            raise ConfigError("own_facet_mean needs the instrument (facets and keying)")
        inst = self.instrument
        keyed = {i: person.keyed_score(inst.item(i)) for i in self.train_ids}

        def mean_over(pred: Callable[[int], bool]) -> float | None:
            values = [v for i, v in keyed.items() if v is not None and pred(i)]
            return statistics.fmean(values) if values else None

        out = {}
        for i in self.test_ids:
            item = inst.item(i)
            level = mean_over(lambda j, it=item: inst.item(j).facet_key == it.facet_key)
            if level is None:
                level = mean_over(lambda j, it=item: inst.item(j).domain == it.domain)
            level = 3.0 if level is None else level
            out[i] = level if item.keyed > 0 else 6.0 - level
        return out


@PREDICTORS.register("ridge")
@dataclass
class RidgePredictor(Predictor):
    l2: float = 100.0  # reproduces DESIGN.md's ridge baseline (trait-sum 2.31 on the 200 PAPI subjects)

    def _matrix(self, people: Sequence[SubjectAnswers], ids: Sequence[int], fill: torch.Tensor) -> torch.Tensor:
        rows = [[float(v) if (v := p.raw_answer(i)) is not None else float("nan") for i in ids] for p in people]
        x = torch.tensor(rows, dtype=torch.float64).reshape(len(people), len(ids))
        return torch.where(torch.isnan(x), fill.expand_as(x), x)

    def predict(self, person: SubjectAnswers) -> dict[int, float]:
        others = _others(self.population, person)
        if len(others) < 2:
            raise ConfigError("ridge needs a population of at least two other people")
        nan = torch.full((len(self.train_ids),), float("nan"), dtype=torch.float64)
        raw_train = self._matrix(others, self.train_ids, nan)
        fill = torch.nanmean(raw_train, dim=0).nan_to_num(3.0)
        x = self._matrix(others, self.train_ids, fill)
        y_nan = torch.full((len(self.test_ids),), float("nan"), dtype=torch.float64)
        y = self._matrix(others, self.test_ids, y_nan)
        y_mean = torch.nanmean(y, dim=0).nan_to_num(3.0)
        y = torch.where(torch.isnan(y), y_mean.expand_as(y), y)
        x_mean = x.mean(0)
        xc, yc = x - x_mean, y - y_mean
        w = torch.linalg.solve(xc.T @ xc + self.l2 * torch.eye(x.shape[1], dtype=torch.float64), xc.T @ yc)
        me = self._matrix([person], self.train_ids, fill)[0]
        pred = ((me - x_mean) @ w + y_mean).clamp(1.0, 5.0)
        return dict(zip(self.test_ids, pred.tolist(), strict=True))
