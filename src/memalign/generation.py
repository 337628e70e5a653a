"""Multi-turn chat sessions: plain (re-encode the conversation for ``model.generate``) and memory-backed
(feed only the new turn into episodic memory). Prompts come from :mod:`memalign.chat_format`.

A streamed answer goes to a ``stream`` callback that receives text pieces as they are decoded; the
library never prints by itself. ``stream=True`` is a shorthand for writing the pieces to ``sys.stdout``
(what a terminal chat wants), for callers that have no display of their own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextStreamer

from memalign.chat_format import chat_input_ids, render_chat
from memalign.text import common_prefix_length

TextSink = Callable[[str], Any]
Stream = bool | TextSink


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _streamer(tokenizer: PreTrainedTokenizerBase, stream: Stream) -> TextStreamer | None:
    if stream is False or stream is None:
        return None
    return _CallbackStreamer(tokenizer, _write_stdout if stream is True else stream)


class ChatSession:
    """Keeps the conversation; each ``ask`` re-encodes it (memory-backed chat reuses a cache instead)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        system: str | None = None,
        max_new_tokens: int = 256,
        **generate_kwargs: Any,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self.max_new_tokens = max_new_tokens
        self.generate_kwargs = {"do_sample": False, **generate_kwargs}

    @torch.inference_mode()
    def ask(self, question: str, stream: Stream = False) -> str:
        """Answer ``question`` in the conversation; ``stream``: a callback for text pieces (True: stdout)."""
        self.messages.append({"role": "user", "content": question})
        input_ids = torch.tensor([chat_input_ids(self.tokenizer, self.messages)], device=self.model.device)
        streamer = _streamer(self.tokenizer, stream)
        output = self.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=self.max_new_tokens,
            streamer=streamer,
            pad_token_id=self.tokenizer.pad_token_id,
            **self.generate_kwargs,
        )
        answer = self.tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True).strip()
        self.messages.append({"role": "assistant", "content": answer})
        return answer


class _CallbackStreamer(TextStreamer):
    """Hands each decoded piece of the answer (prompt skipped) to ``sink``; a newline ends the answer."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, sink: TextSink) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.sink = sink

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.sink(text + ("\n" if stream_end else ""))


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class MemoryChatSession:
    """Multi-turn chat whose whole history (and an optional long document) lives in episodic memory.

    Each turn feeds only new text: the rendered conversation after what memory already holds. Turns are
    rendered with the tokenizer's chat template as text; the closing of an assistant turn (e.g.
    ``<|im_end|>\n``) is fed before the next turn, minus the end-of-turn token the model generated itself.
    """

    _SENTINEL = "\x00memalign-answer\x00"

    def __init__(
        self, memory: Any, tokenizer: PreTrainedTokenizerBase, system: str | None = None, max_new_tokens: int = 256
    ) -> None:
        self.memory, self.tokenizer, self.max_new_tokens = memory, tokenizer, max_new_tokens
        self.cache = memory.new_cache()
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self.eos = _eos_ids(memory.model, tokenizer)
        self.fed_ids: list[int] = []  # every token now in memory, in order (introspection and tests)
        self._in_memory: list[dict[str, str]] = []  # the messages whose rendering memory already holds
        self._pending_close = ""
        self.last_generated: list[int] = []

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return render_chat(self.tokenizer, messages, add_generation_prompt=generation_prompt)

    def _delta_text(self, generation_prompt: bool) -> str:
        """Rendered text of the conversation past what memory holds (a system prompt is fed with the first turn)."""
        previous = self._render(self._in_memory, generation_prompt=False)
        full = self._render(self.messages, generation_prompt=generation_prompt)
        common = len(previous) if full.startswith(previous) else common_prefix_length(previous, full)
        return self._pending_close + full[common:]

    def _encode(self, text: str) -> list[int]:
        """Token ids of ``text``; the template's text holds its special tokens, so only a template-less first
        feed gets the tokenizer's own (BOS), as :func:`~memalign.chat_format.chat_input_ids` gives it."""
        if not text:
            return []
        first_plain = not self.fed_ids and not self.tokenizer.chat_template
        return self.tokenizer(text, add_special_tokens=first_plain)["input_ids"]

    def _feed(self, ids: list[int], progress: Any = None) -> None:
        if ids:
            self.memory.prefill(torch.tensor([ids]), cache=self.cache, progress=progress)
            self.fed_ids.extend(ids)

    def read(self, document: str, progress: Any = None) -> int:
        """Put a document into memory as a user turn acknowledged by the assistant; returns its tokens."""
        self.messages.append(
            {"role": "user", "content": f"Read the following document; I will ask questions about it.\n\n{document}"}
        )
        self.messages.append({"role": "assistant", "content": "I have read the document."})
        ids = self._encode(self._delta_text(generation_prompt=False))
        self._pending_close = ""
        self._feed(ids, progress)
        self._in_memory = list(self.messages)
        return len(ids)

    @torch.inference_mode()
    def ask(self, question: str, stream: Stream = False) -> str:
        """Answer ``question``, feeding only the new turn; ``stream``: a callback for text pieces (True: stdout)."""
        self.messages.append({"role": "user", "content": question})
        ids = self._encode(self._delta_text(generation_prompt=True))
        streamer = _streamer(self.tokenizer, stream)
        new = self.memory.generate(
            torch.tensor([ids]),
            max_new_tokens=self.max_new_tokens,
            cache=self.cache,
            eos_token_id=sorted(self.eos),
            streamer=streamer,
        )[0].tolist()
        self.last_generated = new
        self.fed_ids.extend(ids + new[:-1])  # the last token is fed at the start of the next turn
        answer = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        self.messages.append({"role": "assistant", "content": answer})
        self._in_memory = list(self.messages)
        self._pending_close = self._closing_after(new)
        if new:
            self.fed_ids.append(new[-1])
        return answer

    def _closing_after(self, generated: list[int]) -> str:
        """Template text that closes the assistant turn, minus the end-of-turn token already generated."""
        with_sentinel = self._render(self.messages[:-1] + [{"role": "assistant", "content": self._SENTINEL}], False)
        closing = with_sentinel.split(self._SENTINEL, 1)[1] if self._SENTINEL in with_sentinel else "\n\n"
        if generated and generated[-1] in self.eos:
            eos_text = self.tokenizer.decode([generated[-1]])
            if closing.startswith(eos_text):
                closing = closing[len(eos_text) :]
        return closing
