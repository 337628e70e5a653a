"""Turning a :class:`Record` into token ids, the same way for every method and for the kvpress peer.

The prompt is the chat template applied to one user turn ``context + question`` (through
:func:`memalign.chat_format.render_chat`, the framing every memalign prompt gets), followed by the
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
from memalign.chat_format import render_chat, single_turn
from memalign.errors import ConfigError
from memalign.text import common_prefix_length

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
        text = render_chat(tokenizer, single_turn(record.context + _SENTINEL + record.question))
        head, sep, tail = text.partition(_SENTINEL)
        if not sep:
            raise ConfigError(
                "the model's chat template dropped part of the user message, so the prompt cannot be "
                "split into context and question; use a model whose template keeps the message"
            )
        return head, tail + record.answer_prefix, False
    # Raw prompts (no chat turn to separate them): one space between a question and an answer prefix.
    glue = " " if record.answer_prefix and record.question and not record.question[-1].isspace() else ""
    return record.context, record.question + glue + record.answer_prefix, True


def encode(tokenizer: PreTrainedTokenizerBase, record: Record) -> EncodedPrompt:
    head, tail, special = render(tokenizer, record)
    ids = tokenizer(head + tail, add_special_tokens=special)["input_ids"]
    head_ids = tokenizer(head, add_special_tokens=special)["input_ids"]
    # A token may straddle the boundary; the context part is the longest common prefix.
    return EncodedPrompt(list(ids), common_prefix_length(ids, head_ids))


def count_tokens(tokenizer: PreTrainedTokenizerBase, record: Record) -> int:
    head, tail, special = render(tokenizer, record)
    return len(tokenizer(head + tail, add_special_tokens=special)["input_ids"])


def truncate_middle(prompt: EncodedPrompt, max_tokens: int) -> EncodedPrompt:
    """LongBench's rule: keep the first and last ``max_tokens // 2`` tokens, drop the middle of the context."""
    if max_tokens <= 0 or len(prompt) <= max_tokens:
        return prompt
    half = max_tokens // 2
    ids = prompt.input_ids[:half] + prompt.input_ids[len(prompt) - (max_tokens - half) :]
    dropped = len(prompt) - max_tokens
    return EncodedPrompt(ids, max(0, min(prompt.context_len - dropped, len(ids))))
