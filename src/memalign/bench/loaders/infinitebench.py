"""InfiniteBench (Zhang et al., 2024): the 6 tasks EM-LLM reports, from the official JSONL files.

Prompts and generation budgets are InfLLM's (``benchmark/config``), which EM-LLM inherits: the chat
template is applied, kv_retrieval names the key in the instruction, math_find's instruction is derived
from the question ("What is the largest number in the following list?"), choices are listed A-D.
Scoring follows InfLLM's ``infinitebench_eval.py`` (see :mod:`memalign.bench.metrics`).

Files: ``DIR/<task>.jsonl`` from the Hugging Face dataset ``xinrongzhang2022/InfiniteBench``;
``memalign bench download infinitebench DIR`` fetches them when online.
Row fields: ``id, context, input, answer, options``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from memalign.bench.loaders.common import build_records, find_jsonl, read_rows, register_suite_tasks, split_template
from memalign.bench.records import Record
from memalign.bench.tasks.base import TaskContext
from memalign.errors import DataError

HINT = (
    "Download the task's .jsonl from the Hugging Face dataset xinrongzhang2022/InfiniteBench into that folder, "
    "or run `memalign bench download infinitebench DIR` where the hub is reachable."
)


@dataclass(frozen=True)
class InfiniteBenchSpec:
    prompt: str
    max_new_tokens: int
    metric: str


_CHOICES = "\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}"
SPECS: dict[str, InfiniteBenchSpec] = {
    "passkey": InfiniteBenchSpec(
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz "
        "you about the important information there.\n\n{context}\n\n{input}",
        32,
        "first_int_match",
    ),
    "number_string": InfiniteBenchSpec(
        "There is an important info hidden inside a lot of irrelevant text. Find it. I will quiz you about the "
        "important information there.\n\n{context}\n\n{input}",
        32,
        "first_int_match",
    ),
    "kv_retrieval": InfiniteBenchSpec(
        "Extract the value corresponding to the specified key {key} in the JSON object below.\n\n{context}\n\n{input}",
        100,
        "kv_retrieval",
    ),
    "longbook_choice_eng": InfiniteBenchSpec(
        "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\n\nOnly one of the following "
        "options is correct, tell me the answer using one single letter (A, B, C, or D). Don't say anything else."
        + _CHOICES,
        32,
        "longbook_choice",
    ),
    "math_find": InfiniteBenchSpec("{prefix}\n\n{context}\n\n{input}", 32, "math_find"),
    "code_debug": InfiniteBenchSpec(
        "There is ONLY ONE function in the large project that is deliberately made to include an obvious error. "
        "Please find the function that contains the most obvious errors. I will give you four options to narrow your "
        "scope. You can inspect the options and think. Eventually, tell me the answer using one single letter (A, B, "
        "C, or D).\n\n{context}\n\nWhich funtion has deliberate error?" + _CHOICES + "\n\nGive me your answer for the "
        "function that has the deliberate and obvious error in A, B, C, or D. Your answer MUST be chosen from one of "
        "the four options without any explanation. If you cannot determine answers accurately, you also MUST provide "
        "the answer you think is most likely. Absolutely do not say you do not know or you need more information.",
        32,
        "code_debug",
    ),
}

FIELDS: dict[str, type | tuple[type, ...]] = {"context": str, "input": str, "answer": (list, str, int, float)}


def _fields(task: str, row: dict[str, Any], lineno: int) -> dict[str, Any]:
    fields: dict[str, Any] = {"input": row["input"], "question": row["input"]}
    options = row.get("options") or []
    if task in ("longbook_choice_eng", "code_debug"):
        if len(options) != 4:
            raise DataError(f"needs 4 options, has {len(options)}")
        fields.update({f"OPTION_{c}": o for c, o in zip("ABCD", options, strict=True)})
    if task == "kv_retrieval":
        # InfLLM slices input[6:44], the quoted key; a regex finds the same quoted key without position assumptions.
        found_key = re.search(r'"[^"]+"', row["input"])
        if not found_key:
            raise DataError("input has no quoted key")
        fields["key"] = found_key.group(0)
    if task == "math_find":
        found = re.findall(r"The .+ of", row["input"])
        if not found:
            raise DataError("input has no 'The ... of'")
        fields["prefix"] = f"What is {found[0].lower()[:-3]} in the following list?"
    return fields


def _answers(task: str, row: dict[str, Any]) -> list[Any]:
    answer = row["answer"]
    if task in ("longbook_choice_eng", "code_debug"):  # InfLLM: [option text, letter]
        first = answer[0] if isinstance(answer, list) else answer
        if isinstance(answer, list) and len(answer) == 2 and answer[1] in ("A", "B", "C", "D"):
            return list(answer)
        if first not in row["options"]:
            raise DataError(f"answer {first!r} is not one of the options")
        return [first, "ABCD"[row["options"].index(first)]]
    return list(answer) if isinstance(answer, list) else [answer]


def load_infinitebench(task: str, ctx: TaskContext, n: int) -> list[Record]:
    spec = SPECS[task]
    path = find_jsonl(ctx.data_dir, task, "InfiniteBench", HINT)

    def build(lineno: int, row: dict[str, Any]) -> Record:
        head, tail = split_template(spec.prompt, _fields(task, row, lineno))
        return Record(
            context=head + row["context"],
            question=tail,
            answer_prefix="",
            answer=_answers(task, row),
            max_new_tokens=spec.max_new_tokens,
            task=f"infinitebench:{task}",
            metric=spec.metric,
            id=str(row.get("id", lineno - 1)),
            meta={},
        )

    return build_records(path, read_rows(path, FIELDS, n), build)


register_suite_tasks("infinitebench", "InfiniteBench", SPECS, load_infinitebench, HINT)
