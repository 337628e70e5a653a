"""Evaluation of personality alignment: every mode of PAlign's table plus honest non-LLM baselines.

``memalign persona eval`` / :func:`run_eval` run registered modes (:data:`MODES`) over subjects and write
PAlign-compatible result files; ``memalign persona report`` compares them. The pieces: :mod:`.setup`
(model, data and the caches every mode shares), :mod:`.modes` (one class per method, and the registry),
:mod:`.calibration`, :mod:`.profiles` (person descriptions), :mod:`.answering`, :mod:`.records`,
:mod:`.runner` and :mod:`.report`.
"""

from memalign.persona.evaluation.answering import GeneratedAnswers, generate_answers, parse_answer
from memalign.persona.evaluation.calibration import calibrate
from memalign.persona.evaluation.modes import (
    MODES,
    EvalMode,
    get_mode,
    parse_modes,
    register_mode,
    resolve_mode,
)
from memalign.persona.evaluation.profiles import profile_text
from memalign.persona.evaluation.records import TRAITS, subject_record, summarize
from memalign.persona.evaluation.report import load_results, markdown_table
from memalign.persona.evaluation.runner import result_path, run_eval
from memalign.persona.evaluation.setup import EvalSetup, ModePrediction

__all__ = [
    "MODES",
    "TRAITS",
    "EvalMode",
    "EvalSetup",
    "GeneratedAnswers",
    "ModePrediction",
    "calibrate",
    "generate_answers",
    "get_mode",
    "load_results",
    "markdown_table",
    "parse_answer",
    "parse_modes",
    "profile_text",
    "register_mode",
    "resolve_mode",
    "result_path",
    "run_eval",
    "subject_record",
    "summarize",
]
