"""Alignment methods compared by ``memalign persona eval``: one small registered class per mode.

Every mode answers the same question — "predict this person's raw answers on the held-out items" —
through one interface, :meth:`EvalMode.predict`, and gets everything shared (model, sessions with
cached encodings, PAS fits, the population) from an :class:`~memalign.persona.evaluation.setup.EvalSetup`.
LLM modes differ only in the prompt session they answer from and the steering active while they do; the
non-LLM reference predictors (:mod:`memalign.persona.predictors`) run in the same table because they are
the honest bar. Modes are looked up by name in :data:`MODES` (case, ``_``/``-`` and PAlign's spellings
accepted); adding one is one decorated class.

================  =================================================================================
``NO_CHANGE``     the plain model, default system prompt (one answer set, scored against everyone)
``few-shot``      the person's training answers, in their raw direction, as the system prompt
``personality_prompt``  a per-person "You are ..." description as the system prompt (from a file such as
                  ``personality_prompt_200.json``, or written by the model itself from the answers)
``PAS``           steering fit on the training answers (K and alpha by CV on training items only)
``PAS+profile``   PAS steering *and* the few-shot prompt, as PAlign runs it
``oracle-alpha``  PAS heads, alpha picked on the **test** answers (PAlign's selection; comparison only)
``NO_CHANGE+calibration`` / ``PAS+calibration``
                  the wrapped mode's answers through a per-person, per-trait linear map fitted on the
                  training items only (keyed direction; :mod:`~memalign.persona.evaluation.calibration`)
``always-3``, ``item-mean``, ``own-facet-mean``, ``ridge``  non-LLM predictors
================  =================================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from memalign.chat_format import chat_input_ids, single_turn
from memalign.errors import ConfigError
from memalign.persona.evaluation.answering import generate_replies
from memalign.persona.evaluation.calibration import calibrate, calibrated_prediction
from memalign.persona.evaluation.profiles import PERSONA_REWRITE_PROMPT, answers_fragment, profile_text
from memalign.persona.evaluation.setup import EvalSetup, ModePrediction, Split
from memalign.persona.fit import FitResult
from memalign.persona.instruments import Instrument
from memalign.persona.metrics import alignment_score
from memalign.persona.predictors import Predictor, get_predictor
from memalign.persona.session import QuestionnaireSession
from memalign.persona.subjects import SubjectAnswers
from memalign.registry import Registry

logger = logging.getLogger(__name__)

# Names other modules import from here (the evaluation setup and calibration live in their own modules).
__all__ = [
    "GROUPS",
    "MODES",
    "EvalMode",
    "EvalSetup",
    "ModePrediction",
    "calibrate",
    "get_mode",
    "normalize_mode_name",
    "parse_modes",
    "profile_text",
    "register_mode",
    "resolve_mode",
    "timed_predict",
]

GROUPS = ("all", "llm", "predictors")


def normalize_mode_name(name: str) -> str:
    """The lookup key of a mode name: case, ``_`` vs ``-`` and spaces do not matter."""
    return name.strip().lower().replace("_", "-").replace(" ", "")


@dataclass
class EvalMode:
    """One alignment method. ``prepare`` runs once per run, ``predict`` once per person."""

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def prepare(self, setup: EvalSetup) -> None:
        """Fail before the first person when the mode cannot run (no model), and build per-run state."""
        if self.needs_model:
            setup.require_model(self.name)

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        raise NotImplementedError


MODES: Registry[type[EvalMode]] = Registry(
    "mode", normalize=normalize_mode_name, hint=f"(or {', '.join(repr(g) for g in GROUPS)})"
)


def register_mode(name: str, *aliases: str) -> Callable[[type[EvalMode]], type[EvalMode]]:
    """Class decorator: register a mode under ``name`` (and ``aliases``) and give the class that name."""

    def decorate(cls: type[EvalMode]) -> type[EvalMode]:
        MODES.add(name, cls, aliases=aliases)  # first: a refused name leaves the class untouched
        cls.name = name
        return cls

    return decorate


def resolve_mode(name: str) -> str:
    """Canonical mode name (case, ``_`` vs ``-`` and PAlign's spellings accepted); unknown -> UnknownNameError."""
    return MODES.resolve(name)


def parse_modes(text: str) -> list[str]:
    """Comma-separated modes; ``all``, ``llm`` and ``predictors`` expand to groups.

    ``all`` leaves out ``oracle-alpha``: it reads the test answers, so it is asked for by name (or ``llm``).
    """
    out: list[str] = []
    for part in (p for p in text.split(",") if p.strip()):
        key = normalize_mode_name(part)
        if key in GROUPS:
            group = [m for m, cls in MODES.items() if key == "all" or cls.needs_model == (key == "llm")]
            out += [m for m in group if m != OracleAlpha.name or key != "all"]
        else:
            out.append(resolve_mode(part))
    if not out:
        raise ConfigError("no modes given")
    return list(dict.fromkeys(out))


def get_mode(name: str) -> EvalMode:
    """A fresh instance of the mode called ``name`` (or one of its aliases)."""
    return MODES[name]()


def timed_predict(mode: EvalMode, setup: EvalSetup, person: SubjectAnswers) -> tuple[ModePrediction, float, float]:
    """``mode.predict`` with its wall-clock and process CPU seconds (CPU time stays comparable under load)."""
    start, cpu = time.perf_counter(), time.process_time()
    prediction = mode.predict(setup, person)
    return prediction, time.perf_counter() - start, time.process_time() - cpu


# ---- LLM modes ----------------------------------------------------------------------------------
@dataclass
class SplitAnswerMode(EvalMode):
    """A mode that can answer the training items as well as the test items, which calibration needs."""

    def answers(self, setup: EvalSetup, person: SubjectAnswers, items: Split) -> ModePrediction:
        raise NotImplementedError

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        return self.answers(setup, person, "test")


@register_mode("NO_CHANGE", "no-change", "plain", "none")
@dataclass
class NoChange(SplitAnswerMode):
    description: ClassVar[str] = "plain model, default system prompt"

    def answers(self, setup: EvalSetup, person: SubjectAnswers, items: Split) -> ModePrediction:
        return setup.unsteered(items).copy()


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
        text, source = self.description_of(setup, person)
        prediction = setup.answer(setup.session(setup.split.test, system=text, cache=False))
        prediction.info.update({"description_source": source, "description_chars": len(text)})
        return prediction

    def description_of(self, setup: EvalSetup, person: SubjectAnswers) -> tuple[str, str]:
        """(description, source): from the prompts file, or written by the model from the training answers."""
        if setup.personality_prompts is not None:
            if person.subject_id not in setup.personality_prompts:
                raise ConfigError(
                    f"no personality prompt for subject {person.subject_id} in the prompts file; "
                    "--personality-prompts needs one entry per evaluated subject"
                )
            return setup.personality_prompts[person.subject_id], "file"
        model, tokenizer = setup.require_model(self.name)
        fragment = answers_fragment(person, setup.instrument, setup.split.train, setup.prompt_config)
        prompt = chat_input_ids(tokenizer, single_turn(PERSONA_REWRITE_PROMPT + fragment))
        text = generate_replies(model, tokenizer, [prompt], max_new_tokens=256, batch_size=1)[0].strip()
        if not text:
            raise ConfigError(
                f"the model wrote an empty personality description for subject {person.subject_id}; "
                "pass descriptions with --personality-prompts instead"
            )
        logger.info("subject %s: the model wrote a %d-character personality description", person.subject_id, len(text))
        return text, "generated by the model"


def _fit_info(fit: FitResult) -> dict[str, Any]:
    """What a PAS-based record keeps about the person's fit (chosen K and alpha, CV errors, heads)."""
    return {
        "k": fit.k,
        "alpha": fit.alpha,
        "cv_mae_unsteered": fit.unsteered_cv_mae,
        "cv_mae": fit.best_cv_mae,
        "fit_seconds": fit.seconds,
        "heads": [list(h) for h in fit.steering.heads],
    }


def _steered_answers(setup: EvalSetup, person: SubjectAnswers, session: QuestionnaireSession) -> ModePrediction:
    """``session`` answered under the person's PAS steering, with the fit recorded in ``info``."""
    fit = setup.fit(person)
    prediction = setup.answer(session, fit.steering)
    prediction.info.update(_fit_info(fit))
    return prediction


@register_mode("PAS", "pas-only", "steering")
@dataclass
class PAS(SplitAnswerMode):
    description: ClassVar[str] = "steering only; K and alpha by CV on the training items"

    def answers(self, setup: EvalSetup, person: SubjectAnswers, items: Split) -> ModePrediction:
        # The training items are answered too (under the same steering): PAS+calibration fits its lines there.
        session = setup.split_session(items)
        return _steered_answers(setup, person, session)


@register_mode("PAS+profile", "pas-profile", "pas+few-shot")
@dataclass
class PASProfile(EvalMode):
    description: ClassVar[str] = "PAS steering plus the few-shot profile prompt (PAlign's PAS run)"

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        return _steered_answers(setup, person, setup.profile_session(person))


@register_mode("oracle-alpha", "pas-oracle", "oracle")
@dataclass
class OracleAlpha(EvalMode):
    """PAlign's selection: alpha minimising the trait-sum on the *test* answers. An upper bound, not a method."""

    description: ClassVar[str] = "PAS heads, alpha chosen on the TEST answers (reference's selection; comparison only)"

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        fit = setup.fit(person)
        grid = sorted(set(setup.fit_config.alpha_grid) | {0.0})
        candidates = [setup.answer(setup.test_session, fit.steering, alpha=alpha) for alpha in grid]
        scores = [_trait_sum(c.expected, person, setup.instrument) for c in candidates]
        best = 0
        for n in range(1, len(grid)):
            if scores[n] < scores[best] - 1e-12:  # a tie keeps the alpha that comes first in the grid
                best = n
        prediction = candidates[best]
        prediction.info.update(
            {**_fit_info(fit), "alpha": grid[best], "alpha_cv": fit.alpha, "selection": "test answers"}
        )
        return prediction


def _trait_sum(predictions: Mapping[int, float | None], person: SubjectAnswers, instrument: Instrument) -> float:
    """PAlign's selection score; an unanswered item counts as the midpoint, as in the records."""
    resolved = {i: (3.0 if p is None else p) for i, p in predictions.items()}
    return alignment_score(resolved, person, resolved, instrument).trait_sum


# ---- calibration wrappers ---------------------------------------------------------------------------
@dataclass
class Calibrated(EvalMode):
    """Wraps a mode: its test answers through lines fitted on its own training-item answers."""

    base: SplitAnswerMode

    def prepare(self, setup: EvalSetup) -> None:
        super().prepare(setup)
        self.base.prepare(setup)

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        test = self.base.answers(setup, person, "test")
        train = self.base.answers(setup, person, "train")
        return calibrated_prediction(test, train, person, setup.instrument, setup.calibration_l2)


@register_mode("NO_CHANGE+calibration", "no-change+calibration", "calibrated")
@dataclass
class NoChangeCalibrated(Calibrated):
    description: ClassVar[str] = "plain model's answers through a per-person per-trait line fit on training items"

    base: SplitAnswerMode = field(default_factory=NoChange)


@register_mode("PAS+calibration", "pas-calibration")
@dataclass
class PASCalibrated(Calibrated):
    description: ClassVar[str] = "PAS answers through a per-person per-trait line fit on training items"

    base: SplitAnswerMode = field(default_factory=PAS)


# ---- non-LLM reference predictors ---------------------------------------------------------------
@dataclass
class PredictorMode(EvalMode):
    """A :mod:`memalign.persona.predictors` predictor, fit once per run on the population."""

    needs_model: ClassVar[bool] = False
    predictor_name: ClassVar[str] = ""
    _predictor: Predictor | None = field(default=None, init=False, repr=False)

    def prepare(self, setup: EvalSetup) -> None:
        self._predictor = self._fit(setup)

    def _fit(self, setup: EvalSetup) -> Predictor:
        return get_predictor(self.predictor_name, instrument=setup.instrument).fit(
            setup.population, setup.split.train, setup.split.test
        )

    def predict(self, setup: EvalSetup, person: SubjectAnswers) -> ModePrediction:
        if self._predictor is None:
            self._predictor = self._fit(setup)
        values = self._predictor.predict(person)
        rounded = {i: float(min(5, max(1, round(v)))) for i, v in values.items()}
        return ModePrediction(dict(values), rounded)


@register_mode("always-3", "constant", "always3", "midpoint")
@dataclass
class AlwaysMidpoint(PredictorMode):
    predictor_name: ClassVar[str] = "constant"
    description: ClassVar[str] = "answer 'Neither' (3) to everything"


@register_mode("item-mean", "item_mean")
@dataclass
class ItemMean(PredictorMode):
    predictor_name: ClassVar[str] = "item_mean"
    description: ClassVar[str] = "each item's mean over the other subjects"


@register_mode("own-facet-mean", "own_facet_mean")
@dataclass
class OwnFacetMean(PredictorMode):
    predictor_name: ClassVar[str] = "own_facet_mean"
    description: ClassVar[str] = "the person's mean keyed score on the facet's training items"


@register_mode("ridge")
@dataclass
class Ridge(PredictorMode):
    predictor_name: ClassVar[str] = "ridge"
    description: ClassVar[str] = "ridge regression from the 120 training answers, fit on the other subjects"
