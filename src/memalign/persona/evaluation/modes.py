"""Alignment methods compared by ``memalign persona eval``: one small registered class per mode.

Every mode answers the same question — "predict this person's raw answers on the held-out items" —
through one interface, :meth:`EvalMode.predict`, and gets everything shared (model, sessions with
cached encodings, PAS fits, the population) from an :class:`EvalSetup`. LLM modes differ only in the
prompt session they answer from and the steering active while they do; the non-LLM reference
predictors (:mod:`memalign.persona.predictors`) run in the same table because they are the honest bar.

================  =================================================================================
``NO_CHANGE``     the plain model, default system prompt (one answer set, scored against everyone)
``few-shot``      the person's training answers, in their raw direction, as the system prompt
``personality_prompt``  a per-person "You are ..." description as the system prompt (from a file such as
                  ``personality_prompt_200.json``, or written by the model itself from the answers)
``PAS``           steering fit on the training answers (K and alpha by CV on training items only)
``PAS+profile``   PAS steering *and* the few-shot prompt, as PAlign runs it
``oracle-alpha``  PAS heads, alpha picked on the **test** answers (PAlign's selection; comparison only)
``NO_CHANGE+calibration`` / ``PAS+calibration``
                  the mode's answers through a per-person, per-trait linear map fitted on the training
                  items only (keyed direction)
``always-3``, ``item-mean``, ``own-facet-mean``, ``ridge``  non-LLM predictors
================  =================================================================================
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memalign.errors import ConfigError
from memalign.persona.evaluation.answering import check_answering, generate_answers, generate_replies
from memalign.persona.evaluation.records import keyed_value
from memalign.persona.fit import FitConfig, FitResult, PersonaAligner
from memalign.persona.instruments import Instrument, ItemSplit
from memalign.persona.metrics import alignment_score
from memalign.persona.predictors import Predictor, get_predictor
from memalign.persona.prompts import PromptConfig, chat_prompt_ids
from memalign.persona.session import QuestionnaireSession
from memalign.persona.steering import Steering
from memalign.persona.subjects import SubjectAnswers

FEW_SHOT_PREFIX = "Here are some of your behaviors and your level of recognition towards them;"
# The instruction PAlign's data_preprocess/get_personality_prompt.py sends to a Llama endpoint.
PERSONA_REWRITE_PROMPT = ('Please use "You" to organize and rewrite the following fragment into a smooth object '
                          'description, without including any "accurate" and "inaccurate" elements, but rather a '
                          "natural description:\n")


@dataclass
class ModePrediction:
    """Predicted answers per held-out item (None = no parsable answer) and what the mode decided."""

    expected: dict[int, float | None]
    argmax: dict[int, float | None]
    option_mass: float = math.nan
    info: dict[str, Any] = field(default_factory=dict)


def profile_text(person: SubjectAnswers, instrument: Instrument, item_ids: Sequence[int],
                 config: PromptConfig | None = None) -> str:
    """PAlign's few-shot profile, with the person's *raw* answers ("Cheat to get ahead.:Very Inaccurate").

    Missing answers are left out (PAlign wrote "Unknown"); the separator is PAlign's PAS one (``;``).
    """
    labels = {o.value: o.label for o in (config or PromptConfig()).options}
    parts = [f"{instrument.item(i).text}:{labels[raw]}" for i in item_ids if (raw := person.raw_answer(i)) is not None]
    if not parts:
        raise ConfigError(f"subject {person.subject_id} has no training answers to build a profile from")
    return FEW_SHOT_PREFIX + ";".join(parts)


class EvalSetup:
    """Everything modes share for one model and one item split; sessions and fits are built lazily.

    ``population`` is every loaded subject (the population predictors leave the person out).
    ``personality_prompts`` maps subject id -> description; None makes ``personality_prompt`` ask the
    model to write one from the person's training answers (PAlign's P² recipe).
    """

    def __init__(self, instrument: Instrument, split: ItemSplit, population: Sequence[SubjectAnswers],
                 model: PreTrainedModel | None = None, tokenizer: PreTrainedTokenizerBase | None = None,
                 rewordings: Mapping[int, str] | None = None, prompt_config: PromptConfig | None = None,
                 fit_config: FitConfig | None = None, personality_prompts: Mapping[str, str] | None = None,
                 answering: str = "logits", max_new_tokens: int = 12, calibration_l2: float = 0.1,
                 cache: bool = True) -> None:
        self.instrument, self.split = instrument, split
        self.population = list(population)
        self.model, self.tokenizer = model, tokenizer
        self.rewordings = dict(rewordings or {})
        self.prompt_config = prompt_config or PromptConfig()
        self.fit_config = fit_config or FitConfig()
        self.personality_prompts = dict(personality_prompts) if personality_prompts is not None else None
        self.answering = check_answering(answering)
        self.max_new_tokens, self.calibration_l2, self.cache = max_new_tokens, calibration_l2, cache
        if calibration_l2 < 0:
            raise ConfigError("calibration_l2 must be >= 0")
        self._test_session: QuestionnaireSession | None = None
        self._aligner: PersonaAligner | None = None
        self._fits: dict[str, FitResult] = {}
        self._profiles: dict[str, QuestionnaireSession] = {}
        self._unsteered: dict[str, ModePrediction] = {}

    # ---- shared pieces ------------------------------------------------------------------------
    def require_model(self, mode: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        if self.model is None or self.tokenizer is None:
            raise ConfigError(f"mode {mode!r} needs a model (--model)")
        return self.model, self.tokenizer

    def session(self, item_ids: Sequence[int], system: str | None = None, cache: bool | None = None
                ) -> QuestionnaireSession:
        """A questionnaire session over ``item_ids`` (``system`` replaces the system prompt)."""
        model, tokenizer = self.require_model("LLM")
        return QuestionnaireSession(model, tokenizer, self.instrument.subset(item_ids).items, self.prompt_config,
                                    self.rewordings, system=system, cache=self.cache if cache is None else cache)

    @property
    def test_session(self) -> QuestionnaireSession:
        if self._test_session is None:
            self._test_session = self.session(self.split.test)
        return self._test_session

    @property
    def aligner(self) -> PersonaAligner:
        if self._aligner is None:
            model, tokenizer = self.require_model("PAS")
            self._aligner = PersonaAligner(model, tokenizer, self.instrument.subset(self.split.train).items,
                                           instrument=self.instrument.name, prompt_config=self.prompt_config,
                                           fit_config=self.fit_config, rewordings=self.rewordings,
                                           cache=self.cache).prepare()
        return self._aligner

    def fit(self, person: SubjectAnswers) -> FitResult:
        """The person's PAS fit (training answers only), shared by every PAS-based mode of a run."""
        if person.subject_id not in self._fits:
            self._fits = {person.subject_id: self.aligner.fit(person.restrict(self.split.train))}
        return self._fits[person.subject_id]

    def profile_session(self, person: SubjectAnswers) -> QuestionnaireSession:
        """Test items with the person's few-shot profile as system prompt (prefix encoded once, not cached)."""
        if person.subject_id not in self._profiles:
            text = profile_text(person, self.instrument, self.split.train, self.prompt_config)
            self._profiles = {person.subject_id: self.session(self.split.test, system=text, cache=False)}
        return self._profiles[person.subject_id]

    def answer(self, session: QuestionnaireSession, steering: Steering | None = None,
               alpha: float | None = None) -> ModePrediction:
        """The session's items answered (under ``steering``): option logits, or generated and parsed."""
        if self.answering == "logits":
            scores = session.score(steering, alpha=alpha)
            expected = dict(zip(scores.item_ids, scores.expected.tolist(), strict=True))
            argmax = dict(zip(scores.item_ids, scores.argmax.tolist(), strict=True))
            mass = float(scores.mass.nanmean()) if scores.mass.numel() else math.nan
            return ModePrediction(expected, argmax, mass)
        model, tokenizer = self.require_model("generation answering")
        with steering.apply(model, alpha=alpha) if steering is not None else nullcontext():
            answers = generate_answers(model, tokenizer, session.questions, self.prompt_config.options,
                                       self.max_new_tokens)
        values = {i: (float(v) if v is not None else None) for i, v in zip(session.item_ids, answers.values,
                                                                            strict=True)}
        unparsed = [t for t, v in zip(answers.texts, answers.values, strict=True) if v is None]
        return ModePrediction(values, dict(values), info={"unparsed_examples": unparsed[:3]})

    def unsteered(self, which: str) -> ModePrediction:
        """NO_CHANGE answers of the test (or training) items: the same for every person, computed once."""
        if which not in self._unsteered:
            session = self.test_session if which == "test" else self.aligner.session
            self._unsteered[which] = self.answer(session)
        return self._unsteered[which]

    def persona_description(self, person: SubjectAnswers) -> tuple[str, str]:
        """(description, source) for the ``personality_prompt`` mode."""
        if self.personality_prompts is not None:
            if person.subject_id not in self.personality_prompts:
                raise ConfigError(f"no personality prompt for subject {person.subject_id} in the prompts file")
            return self.personality_prompts[person.subject_id], "file"
        model, tokenizer = self.require_model("personality_prompt")
        labels = {o.value: o.label for o in self.prompt_config.options}
        fragment = ";".join(f"{self.instrument.item(i).text}:{labels[raw]}" for i in self.split.train
                            if (raw := person.raw_answer(i)) is not None)
        prompt = chat_prompt_ids(tokenizer, PERSONA_REWRITE_PROMPT + fragment)
        text = generate_replies(model, tokenizer, [prompt], max_new_tokens=256, batch_size=1)[0].strip()
        if not text:
            raise ConfigError(f"the model wrote an empty personality description for subject {person.subject_id}")
        return text, "generated by the model"


@dataclass
class EvalMode:
    """One alignment method. ``prepare`` runs once per run, ``predict`` once per person."""

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def prepare(self, setup: EvalSetup) -> None:
        if self.needs_model:
            setup.require_model(self.name)

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        raise NotImplementedError


MODES: dict[str, type[EvalMode]] = {}
_ALIASES: dict[str, str] = {}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "")


def register_mode(name: str, *aliases: str) -> Callable[[type[EvalMode]], type[EvalMode]]:
    def decorate(cls: type[EvalMode]) -> type[EvalMode]:
        cls.name = name
        MODES[name] = cls
        for alias in (name, *aliases):
            _ALIASES[_norm(alias)] = name
        return cls
    return decorate


def resolve_mode(name: str) -> str:
    """Canonical mode name (case, ``_`` vs ``-`` and PAlign's spellings accepted)."""
    try:
        return _ALIASES[_norm(name)]
    except KeyError:
        raise ConfigError(f"unknown mode {name!r}; choose from {', '.join(MODES)} (or 'all', 'llm', "
                          "'predictors')") from None


def parse_modes(text: str) -> list[str]:
    """Comma-separated modes; ``all``, ``llm`` and ``predictors`` expand to groups."""
    out: list[str] = []
    for part in (p for p in text.split(",") if p.strip()):
        key = _norm(part)
        if key in {"all", "llm", "predictors"}:
            group = [m for m, cls in MODES.items()
                     if key == "all" or (cls.needs_model == (key == "llm"))]
            out += [m for m in group if m != "oracle-alpha" or key != "all"]
        else:
            out.append(resolve_mode(part))
    if not out:
        raise ConfigError("no modes given")
    return list(dict.fromkeys(out))


def get_mode(name: str) -> EvalMode:
    return MODES[resolve_mode(name)]()


# ---- LLM modes ----------------------------------------------------------------------------------
@register_mode("NO_CHANGE", "no-change", "plain", "none")
@dataclass
class NoChange(EvalMode):
    description: ClassVar[str] = "plain model, default system prompt"

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        base = setup.unsteered("test")
        return ModePrediction(dict(base.expected), dict(base.argmax), base.option_mass, dict(base.info))


@register_mode("few-shot", "fewshot", "profile")
@dataclass
class FewShot(EvalMode):
    description: ClassVar[str] = "the person's training answers (raw direction) as the system prompt"

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        return setup.answer(setup.profile_session(person))


@register_mode("personality_prompt", "p2", "persona-prompt")
@dataclass
class PersonalityPrompt(EvalMode):
    description: ClassVar[str] = "a 'You are ...' description of the person as the system prompt"

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        text, source = setup.persona_description(person)
        prediction = setup.answer(setup.session(setup.split.test, system=text, cache=False))
        prediction.info.update({"description_source": source, "description_chars": len(text)})
        return prediction


def _fit_info(fit: FitResult) -> dict[str, Any]:
    return {"k": fit.k, "alpha": fit.alpha, "cv_mae_unsteered": fit.unsteered_cv_mae, "cv_mae": fit.best_cv_mae,
            "fit_seconds": fit.seconds, "heads": [list(h) for h in fit.steering.heads]}


@register_mode("PAS", "pas-only", "steering")
@dataclass
class PAS(EvalMode):
    description: ClassVar[str] = "steering only; K and alpha by CV on the training items"

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        fit = setup.fit(person)
        prediction = setup.answer(setup.test_session, fit.steering)
        prediction.info.update(_fit_info(fit))
        return prediction


@register_mode("PAS+profile", "pas-profile", "pas+few-shot")
@dataclass
class PASProfile(EvalMode):
    description: ClassVar[str] = "PAS steering plus the few-shot profile prompt (PAlign's PAS run)"

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        fit = setup.fit(person)
        prediction = setup.answer(setup.profile_session(person), fit.steering)
        prediction.info.update(_fit_info(fit))
        return prediction


@register_mode("oracle-alpha", "pas-oracle", "oracle")
@dataclass
class OracleAlpha(EvalMode):
    """PAlign's selection: alpha minimising the trait-sum on the *test* answers. An upper bound, not a method."""

    description: ClassVar[str] = "PAS heads, alpha chosen on the TEST answers (reference's selection; comparison only)"

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        fit = setup.fit(person)
        grid = sorted(set(setup.fit_config.alpha_grid) | {0.0})
        best: tuple[float, float, ModePrediction] | None = None
        for alpha in grid:
            candidate = setup.answer(setup.test_session, fit.steering, alpha=alpha)
            score = _trait_sum(candidate.expected, person, setup.instrument)
            if best is None or score < best[0] - 1e-12:
                best = (score, alpha, candidate)
        assert best is not None
        best[2].info.update({**_fit_info(fit), "alpha": best[1], "alpha_cv": fit.alpha, "selection": "test answers"})
        return best[2]


def _trait_sum(preds: Mapping[int, float | None], person: SubjectAnswers, instrument: Instrument) -> float:
    """PAlign's selection score; an unanswered item counts as the midpoint, as in the records."""
    resolved = {i: (3.0 if p is None else p) for i, p in preds.items()}
    return alignment_score(resolved, person, resolved, instrument).trait_sum


# ---- calibration ----------------------------------------------------------------------------------
def calibrate(train: Mapping[int, float | None], test: Mapping[int, float | None], person: SubjectAnswers,
              instrument: Instrument, l2: float = 0.1) -> tuple[dict[int, float | None], dict[str, list[float]]]:
    """Per trait, fit keyed answer ~ a + b * keyed prediction on the training items; apply to the test items.

    In the keyed (trait) direction the model's item-to-item variation lines up with the trait, so one
    line per trait serves both keyings. ``l2`` shrinks the slope (an unsteered model's expected answers
    vary little, and a free slope through 24 points would amplify noise). Output clamped to 1..5.
    """
    def keyed(value: float, item_id: int) -> float:
        return keyed_value(value, instrument.item(item_id).keyed)

    lines: dict[str, list[float]] = {}
    for domain in instrument.domains:
        pairs = [(keyed(p, i), keyed(float(raw), i)) for i, p in train.items()
                 if p is not None and instrument.item(i).domain == domain and (raw := person.raw_answer(i)) is not None]
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


def _calibrated(base: ModePrediction, train: ModePrediction, setup: EvalSetup, person: SubjectAnswers
                ) -> ModePrediction:
    expected, lines = calibrate(train.expected, base.expected, person, setup.instrument, setup.calibration_l2)
    argmax = {i: (None if v is None else float(min(5, max(1, round(v))))) for i, v in expected.items()}
    return ModePrediction(expected, argmax, base.option_mass, {**base.info, "calibration": lines})


@register_mode("NO_CHANGE+calibration", "no-change+calibration", "calibrated")
@dataclass
class NoChangeCalibrated(EvalMode):
    description: ClassVar[str] = "plain model's answers through a per-person per-trait line fit on training items"

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        return _calibrated(setup.unsteered("test"), setup.unsteered("train"), setup, person)


@register_mode("PAS+calibration", "pas-calibration")
@dataclass
class PASCalibrated(EvalMode):
    description: ClassVar[str] = "PAS answers through a per-person per-trait line fit on training items"

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        fit = setup.fit(person)
        base = setup.answer(setup.test_session, fit.steering)
        train = setup.answer(setup.aligner.session, fit.steering)
        prediction = _calibrated(base, train, setup, person)
        prediction.info.update(_fit_info(fit))
        return prediction


# ---- non-LLM reference predictors ---------------------------------------------------------------
@dataclass
class PredictorMode(EvalMode):
    needs_model: ClassVar[bool] = False
    predictor_name: ClassVar[str] = ""
    _predictor: Predictor | None = None

    def prepare(self, setup: EvalSetup) -> None:
        self._predictor = get_predictor(self.predictor_name, instrument=setup.instrument).fit(
            setup.population, setup.split.train, setup.split.test)

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        if self._predictor is None:
            self.prepare(setup)
        assert self._predictor is not None
        values = self._predictor.predict(person)
        rounded = {i: float(min(5, max(1, round(v)))) for i, v in values.items()}
        return ModePrediction(dict(values), rounded)


def _predictor_mode(name: str, predictor: str, text: str, *aliases: str) -> None:
    cls = type(f"Predictor_{predictor}", (PredictorMode,), {"predictor_name": predictor, "description": text,
                                                            "__annotations__": {}})
    register_mode(name, predictor, *aliases)(dataclass(cls))


_predictor_mode("always-3", "constant", "answer 'Neither' (3) to everything", "always3", "midpoint")
_predictor_mode("item-mean", "item_mean", "each item's mean over the other subjects")
_predictor_mode("own-facet-mean", "own_facet_mean", "the person's mean keyed score on the facet's training items")
_predictor_mode("ridge", "ridge", "ridge regression from the 120 training answers, fit on the other subjects")


def timed_predict(mode: EvalMode, setup: EvalSetup, person: SubjectAnswers) -> tuple[ModePrediction, float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    prediction = mode.predict(setup, person)
    return prediction, time.perf_counter() - start, time.process_time() - cpu
