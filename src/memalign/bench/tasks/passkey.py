"""Passkey retrieval in the Landmark-attention / InfLLM format: a 1..50000 key hidden in noise sentences."""

from __future__ import annotations

import random

from memalign.bench.tasks.base import register_task
from memalign.bench.tasks.haystack import NOISE
from memalign.bench.tasks.noise_needle import NeedleInNoise

TASK_DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)


@register_task
class Passkey(NeedleInNoise):
    name = "passkey"
    description = "Landmark/InfLLM passkey: integer 1..50000 in repeated noise; score = first integer matches"
    thing = "pass key"
    answer_prefix = "The pass key is"
    max_new_tokens = 10

    def make_key(self, rng: random.Random) -> str:
        return str(rng.randint(1, 50000))

    def layout(self, needle: str, before: int, after: int) -> str:
        return "\n".join([TASK_DESCRIPTION, " ".join([NOISE] * before), needle, " ".join([NOISE] * after)]) + "\n"
