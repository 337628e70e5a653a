"""Was the answer within reach? Locating gold answers in the prompt and checking what attention saw.

A wrong answer from a memory method has two very different causes: retrieval did not bring the needle
back (the method's fault), or the needle was in view and the model still did not use it (the model's).
The runner records, for memory methods, the fraction of memory layers whose last prompt token attended
every gold answer (one verbatim occurrence in the context suffices), which separates the two. When a
wrong answer is itself a value from the context (a multi-key distractor), the same share for that value
says whether the model picked the wrong needle among several in view or retrieval brought back only it.
"""

from __future__ import annotations

import bisect
import itertools
import re

from transformers import PreTrainedTokenizerBase

from memalign.bench.prompts import EncodedPrompt, render
from memalign.bench.records import Record

Span = tuple[int, int]


def answer_token_spans(
    tokenizer: PreTrainedTokenizerBase, record: Record, prompt: EncodedPrompt
) -> list[list[Span]] | None:
    """Per gold answer, the token ranges ``[a, b)`` of its verbatim occurrences in the context.

    ``None`` when it cannot be said exactly: an answer that does not occur verbatim in the context
    (free-form QA), a tokenizer without offsets (slow tokenizers), or a prompt that was truncated.
    Occurrences must not be glued to letters or digits (``11656`` does not match inside ``116560``).
    """
    if not record.answer:
        return None
    spans = text_token_spans(tokenizer, record, prompt, [str(answer) for answer in record.answer])
    return spans if spans is not None and all(spans) else None


def _verbatim(text: str) -> re.Pattern[str]:
    """``text`` as a whole value: not glued to letters or digits on either side."""
    return re.compile(r"(?<![0-9A-Za-z])" + re.escape(text) + r"(?![0-9A-Za-z])")


def text_token_spans(
    tokenizer: PreTrainedTokenizerBase, record: Record, prompt: EncodedPrompt, texts: list[str]
) -> list[list[Span]] | None:
    """Per text, the token ranges of its verbatim occurrences in the record's context (an empty list
    for a text that does not occur). ``None`` when positions cannot be mapped onto ``prompt`` (slow
    tokenizer, truncated or differently tokenised prompt). One tokenisation serves every text."""
    if not tokenizer.is_fast:
        return None
    head, tail, special = render(tokenizer, record)
    encoded = tokenizer(head + tail, add_special_tokens=special, return_offsets_mapping=True)
    if list(encoded["input_ids"]) != prompt.input_ids:
        return None  # truncated (LongBench) or re-tokenised differently: positions would not line up
    # Running maxima: special tokens added by the tokenizer carry (0, 0) offsets; bisect needs order.
    token_ends = list(itertools.accumulate((end for _, end in encoded["offset_mapping"]), max))
    token_starts = list(itertools.accumulate((start for start, _ in encoded["offset_mapping"]), max))
    spans: list[list[Span]] = []
    for raw in texts:
        text = raw.strip()
        found = []
        for match in _verbatim(text).finditer(head) if text else ():
            first = bisect.bisect_right(token_ends, match.start())  # first token ending after the match start
            last = bisect.bisect_left(token_starts, match.end())  # first token starting at or after its end
            if first < last:
                found.append((first, last))
        spans.append(found)
    return spans


# Needle values of the synthetic tasks: numbers, UUID-like keys -- strings with a digit in them.
_VALUE = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]*")


def wrong_value(prediction: str, record: Record) -> str | None:
    """The first value-like string of a wrong prediction (a run of letters, digits and dashes with a
    digit in it, e.g. ``3886814``) that occurs verbatim in the context and is not a gold answer: a
    distractor the model copied, whose visibility :func:`answer_attended` can then measure."""
    gold = {str(answer).strip() for answer in record.answer}
    for match in _VALUE.finditer(prediction):
        value = match.group()
        if any(ch.isdigit() for ch in value) and value not in gold and _verbatim(value).search(record.context):
            return value
    return None


def covered(span: Span, attended: list[Span]) -> bool:
    """Whether every token of ``span`` lies in the sorted, merged ranges ``attended``."""
    i = bisect.bisect_right(attended, (span[0], float("inf"))) - 1
    return i >= 0 and attended[i][0] <= span[0] and span[1] <= attended[i][1]


def answer_attended(answers: list[list[Span]], attended_per_layer: list[list[Span]]) -> float | None:
    """Fraction of layers in which every answer has at least one occurrence fully attended."""
    if not attended_per_layer:
        return None
    hits = sum(
        all(any(covered(s, attended) for s in occurrences) for occurrences in answers)
        for attended in attended_per_layer
    )
    return hits / len(attended_per_layer)
