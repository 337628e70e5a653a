"""InfiniteBench's synthetic retrieval tasks, regenerated with the construction of its
``construct_synthetic_dataset.py`` and the prompts/budgets InfLLM and EM-LLM evaluate them with.

* ``ib_passkey``: 5 random digits in noise lines ("The pass key is K. Remember it. K is the pass key.").
* ``ib_number_string``: 10 digits made of 5 random digits with 5 repeated ones inserted.
* ``ib_kv_retrieval``: a JSON object of UUID -> UUID pairs; asked for one key's value.
Length is calibrated in the model's tokens (InfiniteBench ships fixed ~64k/128k files instead).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable

from memalign.bench.records import Record
from memalign.bench.tasks.base import Builder, Task, TaskContext, add_task, fit_each, sample_rng, spread_depths
from memalign.bench.tasks.haystack import NOISE
from memalign.bench.tasks.noise_needle import NeedleInNoise

NOISE_LINE = NOISE + "\n"
PASSKEY_PROMPT = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there.\n\n"
)
NUMBER_PROMPT = (
    "There is an important info hidden inside a lot of irrelevant text. Find it. "
    "I will quiz you about the important information there.\n\n"
)


class InfiniteBenchRetrieve(NeedleInNoise):
    """Retrieve.PassKey / Retrieve.Number: the needle on its own line among noise lines, after ``prompt``."""

    max_new_tokens = 32  # InfLLM/EM-LLM dataset2maxlen

    def __init__(
        self, name: str, description: str, thing: str, prompt: str, make_key: Callable[[random.Random], str]
    ) -> None:
        self.name, self.description, self.thing, self.prompt = name, description, thing, prompt
        self._make_key = make_key

    def make_key(self, rng: random.Random) -> str:
        return self._make_key(rng)

    def layout(self, needle: str, before: int, after: int) -> str:
        return self.prompt + NOISE_LINE * before + needle + "\n" + NOISE_LINE * after + "\n\n"


def _five_digits(rng: random.Random) -> str:
    return "".join(str(rng.randint(0, 9)) for _ in range(5))


def _digits_with_repeats(rng: random.Random) -> str:
    digits = [str(rng.randint(0, 9)) for _ in range(5)]
    for j in range(5):  # InfiniteBench: duplicate a random digit in place, five times
        pos = rng.randint(0, 5 + j - 1)
        digits.insert(pos, digits[pos])
    return "".join(digits)


add_task(
    InfiniteBenchRetrieve(
        "ib_passkey",
        "InfiniteBench Retrieve.PassKey: 5 random digits in noise lines; first integer must match",
        "pass key",
        PASSKEY_PROMPT,
        _five_digits,
    )
)
add_task(
    InfiniteBenchRetrieve(
        "ib_number_string",
        "InfiniteBench Retrieve.Number: 10 digits with repeats in noise lines; first integer must match",
        "sequence of digits",
        NUMBER_PROMPT,
        _digits_with_repeats,
    )
)


class IBKVRetrieval(Task):
    name = "ib_kv_retrieval"
    description = "InfiniteBench Retrieve.KV: JSON of UUID->UUID pairs; gold value must be a word of the answer"
    metric = "kv_retrieval"
    max_new_tokens = 100

    def records(self, ctx: TaskContext, length: int, n: int, seed: int) -> list[Record]:
        builders = (self._sample(length, seed, i, depth) for i, depth in enumerate(spread_depths(ctx, n)))
        return fit_each(ctx, length, builders, "pairs")

    def _sample(self, length: int, seed: int, i: int, depth: float) -> Builder:
        rng = sample_rng(seed, self.name, i)
        pairs: list[tuple[str, str]] = []  # drawn as the search asks for more: a prefix never changes

        def build(k: int) -> Record:
            while len(pairs) < k + 1:
                pairs.append(
                    (
                        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    )
                )
            gold_key, gold_value = pairs[0]
            items = pairs[1 : k + 1]
            items.insert(int(round(depth * k)), (gold_key, gold_value))
            data = "JSON data:\n" + json.dumps(dict(items), ensure_ascii=False)
            context = (
                "Extract the value corresponding to the specified key "
                f'"{gold_key}" in the JSON object below.\n\n{data}\n\n'
            )
            question = f'Key: "{gold_key}"\nThe value associated with the specified key is: '
            return self.record(length, i, (context, question, ""), [gold_value], depth=depth, length=length)

        return build


add_task(IBKVRetrieval())
