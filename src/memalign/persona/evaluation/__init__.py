"""Evaluation of personality alignment: every mode of PAlign's table plus honest non-LLM baselines.

``memalign persona eval`` / :func:`run_eval` run registered modes (:data:`MODES`) over subjects and write
PAlign-compatible result files; ``memalign persona report`` compares them.
"""

from memalign.persona.evaluation.answering import GeneratedAnswers, generate_answers, parse_answer
from memalign.persona.evaluation.modes import (
    MODES,
    EvalMode,
    EvalSetup,
    ModePrediction,
    calibrate,
    get_mode,
    parse_modes,
    profile_text,
    register_mode,
    resolve_mode,
)
from memalign.persona.evaluation.records import TRAITS, subject_record, summarize
from memalign.persona.evaluation.report import load_results, markdown_table
from memalign.persona.evaluation.runner import model_label, result_path, run_eval

__all__ = [
    "MODES", "TRAITS", "EvalMode", "EvalSetup", "GeneratedAnswers", "ModePrediction", "calibrate", "generate_answers",
    "get_mode", "load_results", "markdown_table", "model_label", "parse_answer", "parse_modes", "profile_text",
    "register_mode", "resolve_mode", "result_path", "run_eval", "subject_record", "summarize",
]
