"""Per-request sampling settings, the token sampler of one row and its stop-string detector.

Each row of a batch samples with its own settings and its own ``torch.Generator``, so a request with a
``seed`` gives the same answer whatever else is in the batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from memalign.errors import RequestError

__all__ = ["SamplingParams", "StopText", "TokenSampler"]

MAX_STOP_STRINGS = 4  # as OpenAI


@dataclass(frozen=True)
class SamplingParams:
    """What a chat-completion request sets about decoding; validated on construction (OpenAI's ranges).

    ``temperature`` 0 is greedy decoding. ``stop`` strings end the answer before them.
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise RequestError(f"max_tokens must be a positive integer, got {self.max_tokens!r}", "max_tokens")
        if not 0.0 <= self.temperature <= 2.0:
            raise RequestError(f"temperature must be between 0 and 2, got {self.temperature}", "temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}", "top_p")
        if len(self.stop) > MAX_STOP_STRINGS or any(not isinstance(s, str) or not s for s in self.stop):
            raise RequestError(f"stop takes up to {MAX_STOP_STRINGS} non-empty strings", "stop")


class TokenSampler:
    """Picks the next token of one row from its logits: greedy, or temperature + nucleus (top-p) sampling."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.generator = torch.Generator()
        self.generator.manual_seed(params.seed if params.seed is not None else random.SystemRandom().getrandbits(63))

    def __call__(self, logits: torch.Tensor) -> int:
        """``logits`` [V] (any device) -> the next token id."""
        params = self.params
        logits = logits.float().cpu()
        if params.temperature == 0.0:
            return int(logits.argmax())
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # keep the smallest prefix whose mass reaches top_p (the first token always stays)
            drop = sorted_probs.cumsum(0) - sorted_probs >= params.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))


class StopText:
    """Tracks the decoded answer of one row: what may be streamed now, and whether a stop string occurred.

    Text that could still become a stop string (a suffix that is a prefix of one) is held back, as is an
    incomplete UTF-8 character, so a streamed answer never shows text the final answer does not contain.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.emitted = 0
        self.stopped = False
        self.text = ""

    def update(self, text: str) -> str:
        """Feed the whole answer decoded so far; returns the new text safe to emit."""
        self.text = text
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self.text = text[:cut]
            return self.flush()
        safe = len(text)
        if text.endswith("\ufffd"):
            safe -= 1
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    safe = min(safe, len(text) - n)
                    break
        if safe <= self.emitted:
            return ""
        out = text[self.emitted : safe]
        self.emitted = safe
        return out

    def flush(self) -> str:
        """Everything not yet emitted of the final answer."""
        out = self.text[self.emitted :]
        self.emitted = len(self.text)
        return out
