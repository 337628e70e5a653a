"""Multi-turn chat on top of ``model.generate`` with a streamed answer."""

from __future__ import annotations

import sys
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextStreamer


def build_chat_inputs(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> torch.Tensor:
    """Token ids for a conversation ending in a generation prompt; plain text for base models."""
    if tokenizer.chat_template:
        # Qwen3 templates honour enable_thinking; others ignore unknown template kwargs.
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False,
                                            return_tensors="pt", return_dict=True)
        return out["input_ids"]
    text = "\n\n".join(m["content"] for m in messages) + "\n\n"
    return tokenizer(text, return_tensors="pt")["input_ids"]


class ChatSession:
    """Keeps the conversation; each ``ask`` re-encodes it (memory-backed chat reuses a cache instead)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, system: str | None = None,
                 max_new_tokens: int = 256, **generate_kwargs: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self.max_new_tokens = max_new_tokens
        self.generate_kwargs = {"do_sample": False, **generate_kwargs}

    @torch.inference_mode()
    def ask(self, question: str, stream: bool = False) -> str:
        self.messages.append({"role": "user", "content": question})
        input_ids = build_chat_inputs(self.tokenizer, self.messages).to(self.model.device)
        streamer = _StdoutStreamer(self.tokenizer) if stream else None
        output = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                     max_new_tokens=self.max_new_tokens, streamer=streamer,
                                     pad_token_id=self.tokenizer.pad_token_id, **self.generate_kwargs)
        answer = self.tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True).strip()
        self.messages.append({"role": "assistant", "content": answer})
        return answer


class _StdoutStreamer(TextStreamer):
    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        sys.stdout.write(text + ("\n" if stream_end else ""))
        sys.stdout.flush()


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

    def __init__(self, memory: Any, tokenizer: PreTrainedTokenizerBase, system: str | None = None,
                 max_new_tokens: int = 256) -> None:
        self.memory, self.tokenizer, self.max_new_tokens = memory, tokenizer, max_new_tokens
        self.cache = memory.new_cache()
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self.eos = _eos_ids(memory.model, tokenizer)
        self.fed_ids: list[int] = []  # every token now in memory, in order (introspection and tests)
        self._pending_close = ""
        self.last_generated: list[int] = []

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        if not messages:
            return ""
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                                      enable_thinking=False)
        text = "\n\n".join(m["content"] for m in messages)
        return text + ("\n\n" if generation_prompt else "")

    def _delta_text(self, before: list[dict[str, str]], generation_prompt: bool) -> str:
        previous = self._render(before, generation_prompt=False)
        full = self._render(self.messages, generation_prompt=generation_prompt)
        common = len(previous) if full.startswith(previous) else _common_prefix(previous, full)
        return self._pending_close + full[common:]

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _feed(self, ids: list[int], progress: Any = None) -> None:
        if ids:
            self.memory.prefill(torch.tensor([ids]), cache=self.cache, progress=progress)
            self.fed_ids.extend(ids)

    def read(self, document: str, progress: Any = None) -> int:
        """Put a document into memory as a user turn acknowledged by the assistant; returns its tokens."""
        before = list(self.messages)
        self.messages.append({"role": "user",
                              "content": f"Read the following document; I will ask questions about it.\n\n{document}"})
        self.messages.append({"role": "assistant", "content": "I have read the document."})
        ids = self._encode(self._delta_text(before, generation_prompt=False))
        self._pending_close = ""
        self._feed(ids, progress)
        return len(ids)

    @torch.inference_mode()
    def ask(self, question: str, stream: bool = False) -> str:
        before = list(self.messages)
        self.messages.append({"role": "user", "content": question})
        ids = self._encode(self._delta_text(before, generation_prompt=True))
        streamer = _StdoutStreamer(self.tokenizer) if stream else None
        new = self.memory.generate(torch.tensor([ids]), max_new_tokens=self.max_new_tokens, cache=self.cache,
                                   eos_token_id=sorted(self.eos), streamer=streamer)[0].tolist()
        self.last_generated = new
        self.fed_ids.extend(ids + new[:-1])  # the last token is fed at the start of the next turn
        answer = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        self.messages.append({"role": "assistant", "content": answer})
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
                closing = closing[len(eos_text):]
        return closing


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
