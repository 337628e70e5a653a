"""Turning a model's output into a Likert answer: option-token logits (default) or generated text.

Logit scoring (:class:`~memalign.persona.scoring.OptionScorer`) is deterministic and never fails to
answer. Generation-based answering exists to compare with the reference (which parsed the first 12
generated characters with ``[abcdeABCDE][^a-zA-Z]`` and silently dropped what it could not parse — and
read "The answer" as E). :func:`parse_answer` only accepts an option letter that stands alone (``(A)``,
``A.``, ``A:``, ``Option A``, ``A`` as the whole reply) or the exact option label ("Moderately
Accurate"); anything else is *unparsed*, and the caller counts it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memalign.errors import ConfigError
from memalign.persona.choices import check_choice
from memalign.persona.prompts import LikertOption

ANSWERING = ("logits", "generate")


def check_answering(kind: str) -> str:
    return check_choice("answering", kind, ANSWERING)


def parse_answer(text: str, options: Sequence[LikertOption]) -> int | None:
    """The option value a reply states, or None when it states none (or more than one) unambiguously."""
    reply = text.strip()
    if not reply:
        return None
    letters = "".join(o.letter for o in options)
    by_letter = {o.letter: o.value for o in options}
    # 1. a letter standing alone at the start: "(A", "(A)", "A.", "A)", "A:", "A", "**A**", "Answer: (B)"
    head = re.sub(r"^(?:\W*(?:answer|option|choice)\s*(?:is)?\s*[:\-]?\s*)", "", reply, flags=re.IGNORECASE)
    match = re.match(rf"^[\s*(\[]*([{letters}])(?![A-Za-z])", head)
    if match:
        return by_letter[match.group(1)]
    # 2. exactly one option label named in the reply ("I'd say Moderately Accurate")
    lowered = reply.lower()
    hits = [o for o in options if o.label.lower() in lowered]
    hits = [o for o in hits if not any(o is not p and o.label.lower() in p.label.lower() for p in hits)]
    if len(hits) == 1:
        return hits[0].value
    if len(hits) > 1:
        return None
    # 3. "(C)" anywhere, once
    inside = set(re.findall(rf"\(([{letters}])\)", reply))
    if len(inside) == 1:
        return by_letter[inside.pop()]
    return None


@dataclass(frozen=True)
class GeneratedAnswers:
    """Replies and the values parsed from them (None = unparsed: the caller counts and reports those)."""

    texts: tuple[str, ...]
    values: tuple[int | None, ...]


@torch.inference_mode()
def generate_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 12,
    batch_size: int = 16,
) -> list[str]:
    """Greedy replies to tokenized prompts (left-padded batches; any active steering hooks apply)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ConfigError("the tokenizer has neither a pad nor an eos token; generation answering needs one")
    replies: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [list(p) for p in prompts[start : start + batch_size]]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=model.device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        replies += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return replies


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    options: Sequence[LikertOption],
    max_new_tokens: int = 12,
    batch_size: int = 16,
) -> GeneratedAnswers:
    texts = generate_replies(model, tokenizer, prompts, max_new_tokens, batch_size)
    return GeneratedAnswers(tuple(texts), tuple(parse_answer(t, options) for t in texts))
