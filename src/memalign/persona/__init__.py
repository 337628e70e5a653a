"""Personality alignment (PAS, PAlign ICLR 2025): steer a model to answer like a given person.

Typical use::

    from memalign import load_model
    from memalign.persona import PersonaAligner, load_ipip_neo_300, load_answers, palign_split

    model, tok = load_model("qwen2.5-coder-0.5b-instruct")
    ipip = load_ipip_neo_300("ipip_neo_300_itemkey.csv")
    split = palign_split(ipip)
    person = load_answers("subjects_200.json", ipip, recoded=True)[0]
    result = PersonaAligner(model, tok, ipip.subset(split.train).items).fit(person)
    with result.steering.apply(model):
        ...  # generate / chat as that person
"""

from memalign.persona.artifact import load_steering, read_steering, save_steering
from memalign.persona.bake import bake
from memalign.persona.batching import ContextBank
from memalign.persona.capture import HeadActivations, capture_last_token, model_fingerprint
from memalign.persona.fit import (
    PALIGN_ALPHA_GRID,
    SIGNED_ALPHA_GRID,
    FitConfig,
    FitResult,
    PersonaAligner,
    fit_steering,
)
from memalign.persona.instruments import (
    Instrument,
    Item,
    ItemSplit,
    load_ipip_neo_120,
    load_ipip_neo_300,
    load_item_key,
    load_split,
    palign_split,
)
from memalign.persona.metrics import AlignmentScore, alignment_score, item_errors, mean_score
from memalign.persona.predictors import PREDICTORS, Predictor, get_predictor
from memalign.persona.prompts import (
    DEFAULT_SYSTEM_PROMPT,
    LIKERT_OPTIONS,
    PALIGN_QUESTION_TEMPLATE,
    LikertOption,
    PromptConfig,
    load_rewordings,
    to_second_person,
)
from memalign.persona.scoring import AnswerScores, OptionScorer
from memalign.persona.session import QuestionnaireSession
from memalign.persona.steering import POSITIONS, Steering, SteeringHandle
from memalign.persona.subjects import (
    AnswersFile,
    SubjectAnswers,
    answers_document,
    domain_scores,
    facet_scores,
    find_subject,
    load_answers,
    load_personality_prompts,
    read_answers_file,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "LIKERT_OPTIONS",
    "PALIGN_ALPHA_GRID",
    "PALIGN_QUESTION_TEMPLATE",
    "POSITIONS",
    "SIGNED_ALPHA_GRID",
    "AnswerScores",
    "ContextBank",
    "FitConfig",
    "FitResult",
    "HeadActivations",
    "Instrument",
    "Item",
    "ItemSplit",
    "LikertOption",
    "OptionScorer",
    "PersonaAligner",
    "PromptConfig",
    "QuestionnaireSession",
    "Steering",
    "SteeringHandle",
    "SubjectAnswers",
    "AnswersFile",
    "load_personality_prompts",
    "read_answers_file",
    "answers_document",
    "bake",
    "capture_last_token",
    "domain_scores",
    "facet_scores",
    "find_subject",
    "fit_steering",
    "load_answers",
    "load_ipip_neo_120",
    "load_ipip_neo_300",
    "load_item_key",
    "load_rewordings",
    "load_split",
    "load_steering",
    "model_fingerprint",
    "palign_split",
    "read_steering",
    "save_steering",
    "to_second_person",
    "AlignmentScore",
    "PREDICTORS",
    "Predictor",
    "alignment_score",
    "get_predictor",
    "item_errors",
    "mean_score",
]
