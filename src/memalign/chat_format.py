"""The one way memalign turns messages into a prompt: the model's own chat template.

``chat``, ``bench`` and ``persona`` all build prompts here so that a model answers the same framing
everywhere. Qwen3 templates are rendered with ``enable_thinking=False`` (memalign scores and retrieves on
the answer, not on a reasoning trace); other templates ignore that keyword.

Two fallbacks, both deliberate:

* a template that refuses a ``system`` turn (Gemma's raises "System role not supported") gets the
  system text folded into the first user turn, separated by a blank line;
* a tokenizer without any chat template (a base model) gets the message contents joined by blank lines,
  followed by a blank line when a generation prompt is asked for. Base models have no assistant header,
  so this is the plainest text that still separates turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

Message = dict[str, Any]


def _fold_system(messages: Sequence[Message]) -> list[Message]:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest and rest[0]["role"] == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    elif system:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def render_chat(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], *, add_generation_prompt: bool = True
) -> str:
    """The prompt text of ``messages`` (special tokens included where the template puts them)."""
    if not messages:
        return ""
    if not tokenizer.chat_template:
        text = "\n\n".join(m["content"] for m in messages)
        return text + ("\n\n" if add_generation_prompt else "")
    kwargs: dict[str, Any] = dict(tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=False)
    try:
        return tokenizer.apply_chat_template(list(messages), **kwargs)
    except Exception:  # jinja2's TemplateError for "system role not supported"; retry only that case
        if not any(m["role"] == "system" for m in messages):
            raise
        return tokenizer.apply_chat_template(_fold_system(messages), **kwargs)


def chat_input_ids(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], *, add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of :func:`render_chat`.

    The rendered text already holds BOS and other special tokens where the template wants them, so the
    tokenizer adds none; without a template the tokenizer's own special tokens (BOS) are added.
    """
    text = render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=not tokenizer.chat_template)["input_ids"])


def single_turn(user: str, system: str | None = None) -> list[Message]:
    """``[system?, user]`` messages of a one-turn prompt."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
