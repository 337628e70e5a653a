"""Turning a :class:`Record` into token ids, the same way for every method and for the kvpress peer.

The prompt is the chat template applied to one user turn ``context + question``, followed by the
``answer_prefix`` after the assistant header (what kvpress's pipeline builds). Records flagged
``chat_template=False`` (LongBench's few-shot and code tasks, base models without a template) are
fed as raw text (question and answer prefix then joined by one space). ``context_len`` marks how
many leading tokens belong to the context: a
prefill-compression method (kvpress) may compress those and must keep the rest verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from memalign.bench.records import Record

# Never appears in real text; splits the rendered template into (head + context) and (question + tail).
_SENTINEL = "\u2063<<memalign-question>>\u2063"


@dataclass(frozen=True)
class EncodedPrompt:
    input_ids: list[int]
    context_len: int

    def __len__(self) -> int:
        return len(self.input_ids)


def render(tokenizer: PreTrainedTokenizerBase, record: Record) -> tuple[str, str, bool]:
    """(text up to the end of the context, the rest, whether the tokenizer should add special tokens)."""
    if record.chat_template and tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": record.context + _SENTINEL + record.question}],
            add_generation_prompt=True, tokenize=False, enable_thinking=False,
        )
        head, sep, tail = text.partition(_SENTINEL)
        if not sep:
            raise ValueError("the chat template dropped part of the user message; cannot split context/question")
        return head, tail + record.answer_prefix, False
    # Raw prompts (no chat turn to separate them): one space between a question and an answer prefix.
    glue = " " if record.answer_prefix and record.question and not record.question[-1].isspace() else ""
    return record.context, record.question + glue + record.answer_prefix, True


def encode(tokenizer: PreTrainedTokenizerBase, record: Record) -> EncodedPrompt:
    head, tail, special = render(tokenizer, record)
    ids = tokenizer(head + tail, add_special_tokens=special)["input_ids"]
    head_ids = tokenizer(head, add_special_tokens=special)["input_ids"]
    # A token may straddle the boundary; the context part is the longest common prefix.
    n = 0
    for a, b in zip(ids, head_ids, strict=False):
        if a != b:
            break
        n += 1
    return EncodedPrompt(list(ids), n)


def count_tokens(tokenizer: PreTrainedTokenizerBase, record: Record) -> int:
    head, tail, special = render(tokenizer, record)
    return len(tokenizer(head + tail, add_special_tokens=special)["input_ids"])


def truncate_middle(prompt: EncodedPrompt, max_tokens: int) -> EncodedPrompt:
    """LongBench's rule: keep the first and last ``max_tokens // 2`` tokens, drop the middle of the context."""
    if max_tokens <= 0 or len(prompt) <= max_tokens:
        return prompt
    half = max_tokens // 2
    ids = prompt.input_ids[:half] + prompt.input_ids[len(prompt) - (max_tokens - half):]
    dropped = len(prompt) - max_tokens
    return EncodedPrompt(ids, max(0, min(prompt.context_len - dropped, len(ids))))
