"""What every evaluation mode shares for one model and one item split: sessions, PAS fits, answering.

A run evaluates several modes on many people with the same model. Encoding the questionnaire prompts,
capturing the head activations and fitting a person's PAS steering are the expensive parts, and several
modes need the same ones (``PAS``, ``PAS+profile``, ``oracle-alpha`` and ``PAS+calibration`` all use one
fit per person), so :class:`EvalSetup` builds each piece lazily, once, and hands it to every mode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memalign.errors import ConfigError
from memalign.persona.evaluation.answering import check_answering, generate_answers
from memalign.persona.evaluation.profiles import profile_text
from memalign.persona.fit import FitConfig, FitResult, PersonaAligner
from memalign.persona.instruments import Instrument, ItemSplit
from memalign.persona.prompts import PromptConfig
from memalign.persona.session import QuestionnaireSession
from memalign.persona.steering import Steering
from memalign.persona.subjects import SubjectAnswers

Split = Literal["train", "test"]


@dataclass
class ModePrediction:
    """Predicted answers per held-out item (None = no parsable answer) and what the mode decided."""

    expected: dict[int, float | None]
    argmax: dict[int, float | None]
    option_mass: float = math.nan
    info: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> ModePrediction:
        """A copy whose dicts can be changed without touching this one (shared answers are cached)."""
        return ModePrediction(dict(self.expected), dict(self.argmax), self.option_mass, dict(self.info))


class EvalSetup:
    """Everything modes share for one model and one item split; sessions and fits are built lazily.

    ``population`` is every loaded subject (the population predictors leave the person out).
    ``personality_prompts`` maps subject id -> description; None makes ``personality_prompt`` ask the
    model to write one from the person's training answers (PAlign's P² recipe).
    """

    def __init__(
        self,
        instrument: Instrument,
        split: ItemSplit,
        population: Sequence[SubjectAnswers],
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        rewordings: Mapping[int, str] | None = None,
        prompt_config: PromptConfig | None = None,
        fit_config: FitConfig | None = None,
        personality_prompts: Mapping[str, str] | None = None,
        answering: str = "logits",
        max_new_tokens: int = 12,
        calibration_l2: float = 0.1,
        cache: bool = True,
    ) -> None:
        if calibration_l2 < 0:
            raise ConfigError(f"calibration_l2 must be >= 0, got {calibration_l2}")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.instrument, self.split = instrument, split
        self.population = list(population)
        self.model, self.tokenizer = model, tokenizer
        self.rewordings = dict(rewordings or {})
        self.prompt_config = prompt_config or PromptConfig()
        self.fit_config = fit_config or FitConfig()
        self.personality_prompts = dict(personality_prompts) if personality_prompts is not None else None
        self.answering = check_answering(answering)
        self.max_new_tokens, self.calibration_l2, self.cache = max_new_tokens, calibration_l2, cache
        self._test_session: QuestionnaireSession | None = None
        self._aligner: PersonaAligner | None = None
        # One person at a time: a run finishes every mode for a person before the next, so older
        # entries are dropped rather than kept for the whole population.
        self._fits: dict[str, FitResult] = {}
        self._profiles: dict[str, QuestionnaireSession] = {}
        self._unsteered: dict[Split, ModePrediction] = {}

    def require_model(self, mode: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The model and tokenizer, or a clear error naming the mode that needs them."""
        if self.model is None or self.tokenizer is None:
            raise ConfigError(f"mode {mode!r} needs a model (--model)")
        return self.model, self.tokenizer

    # ---- prompt sessions ------------------------------------------------------------------------
    def session(
        self, item_ids: Sequence[int], system: str | None = None, cache: bool | None = None
    ) -> QuestionnaireSession:
        """A questionnaire session over ``item_ids`` (``system`` replaces the system prompt)."""
        model, tokenizer = self.require_model("LLM")
        return QuestionnaireSession(
            model,
            tokenizer,
            self.instrument.subset(item_ids).items,
            self.prompt_config,
            self.rewordings,
            system=system,
            cache=self.cache if cache is None else cache,
        )

    @property
    def test_session(self) -> QuestionnaireSession:
        """The held-out items under the default system prompt (shared by every person)."""
        if self._test_session is None:
            self._test_session = self.session(self.split.test)
        return self._test_session

    @property
    def aligner(self) -> PersonaAligner:
        """PAS on the training items: their encodings and head activations, prepared once per run."""
        if self._aligner is None:
            model, tokenizer = self.require_model("PAS")
            self._aligner = PersonaAligner(
                model,
                tokenizer,
                self.instrument.subset(self.split.train).items,
                instrument=self.instrument.name,
                prompt_config=self.prompt_config,
                fit_config=self.fit_config,
                rewordings=self.rewordings,
                cache=self.cache,
            ).prepare()
        return self._aligner

    def split_session(self, items: Split) -> QuestionnaireSession:
        """The session over the test items, or over the training items (the one PAS is fit on)."""
        return self.test_session if items == "test" else self.aligner.session

    def profile_session(self, person: SubjectAnswers) -> QuestionnaireSession:
        """Test items with the person's few-shot profile as system prompt (prefix encoded once, not cached)."""
        if person.subject_id not in self._profiles:
            text = profile_text(person, self.instrument, self.split.train, self.prompt_config)
            self._profiles = {person.subject_id: self.session(self.split.test, system=text, cache=False)}
        return self._profiles[person.subject_id]

    # ---- fits and answers -----------------------------------------------------------------------
    def fit(self, person: SubjectAnswers) -> FitResult:
        """The person's PAS fit (training answers only), shared by every PAS-based mode of a run."""
        if person.subject_id not in self._fits:
            self._fits = {person.subject_id: self.aligner.fit(person.restrict(self.split.train))}
        return self._fits[person.subject_id]

    def answer(
        self, session: QuestionnaireSession, steering: Steering | None = None, alpha: float | None = None
    ) -> ModePrediction:
        """The session's items answered (under ``steering``): option logits, or generated and parsed."""
        if self.answering == "logits":
            scores = session.score(steering, alpha=alpha)
            expected = dict(zip(scores.item_ids, scores.expected.tolist(), strict=True))
            argmax = dict(zip(scores.item_ids, scores.argmax.tolist(), strict=True))
            mass = float(scores.mass.nanmean()) if scores.mass.numel() else math.nan
            return ModePrediction(expected, argmax, mass)
        model, tokenizer = self.require_model("generation answering")
        with steering.apply(model, alpha=alpha) if steering is not None else nullcontext():
            answers = generate_answers(
                model, tokenizer, session.questions, self.prompt_config.options, self.max_new_tokens
            )
        values = {
            i: (float(v) if v is not None else None) for i, v in zip(session.item_ids, answers.values, strict=True)
        }
        unparsed = [t for t, v in zip(answers.texts, answers.values, strict=True) if v is None]
        return ModePrediction(values, dict(values), info={"unparsed_examples": unparsed[:3]})

    def unsteered(self, items: Split) -> ModePrediction:
        """NO_CHANGE answers of the test (or training) items: the same for every person, computed once.

        The cached prediction is shared; callers that change it take :meth:`ModePrediction.copy` first.
        """
        if items not in self._unsteered:
            self._unsteered[items] = self.answer(self.split_session(items))
        return self._unsteered[items]
