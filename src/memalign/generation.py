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
