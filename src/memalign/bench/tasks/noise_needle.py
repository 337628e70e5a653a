"""A key stated in one sentence and hidden at a depth of repeated noise: the passkey family.

Landmark attention's passkey (as InfLLM runs it) and InfiniteBench's Retrieve.PassKey / Retrieve.Number
differ only in the key, the needle's surroundings and the generation budget; the sampling, the depth
placement and the length calibration are this one loop.
"""

from __future__ import annotations

import random
from abc import abstractmethod

from memalign.bench.records import Record
from memalign.bench.tasks.base import Builder, Task, TaskContext, fit_each, sample_rng, spread_depths


class NeedleInNoise(Task):
    """``The {thing} is K. Remember it. K is the {thing}.`` at a depth of noise; asked ``What is the {thing}?``.

    Subclasses draw the key (:meth:`make_key`) and lay the needle out in the noise (:meth:`layout`)."""

    thing: str
    answer_prefix: str = ""
    metric = "first_int_match"
    max_new_tokens: int

    @abstractmethod
    def make_key(self, rng: random.Random) -> str:
        """Sample ``rng``'s key (the gold answer)."""

    @abstractmethod
    def layout(self, needle: str, before: int, after: int) -> str:
        """The context: the needle with ``before`` units of noise ahead of it and ``after`` behind."""

    def needle(self, key: str) -> str:
        return f"The {self.thing} is {key}. Remember it. {key} is the {self.thing}."

    def records(self, ctx: TaskContext, length: int, n: int, seed: int) -> list[Record]:
        builders = (self._sample(length, seed, i, depth) for i, depth in enumerate(spread_depths(ctx, n)))
        return fit_each(ctx, length, builders, "noise")

    def _sample(self, length: int, seed: int, i: int, depth: float) -> Builder:
        key = self.make_key(sample_rng(seed, self.name, i))
        needle = self.needle(key)

        def build(k: int) -> Record:
            before = int(round(k * depth))
            prompt = self.layout(needle, before, k - before), f"What is the {self.thing}?", self.answer_prefix
            return self.record(length, i, prompt, [key], depth=depth, length=length)

        return build
