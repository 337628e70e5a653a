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

from memalign.bench.records import Record
from memalign.bench.tasks.base import Fitter, Task, TaskContext, register_task, sample_rng, spread_depths

NOISE_LINE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
PASSKEY_PROMPT = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
                  "I will quiz you about the important information there.\n\n")
NUMBER_PROMPT = ("There is an important info hidden inside a lot of irrelevant text. Find it. "
                 "I will quiz you about the important information there.\n\n")


class _NeedleInNoise(Task):
    prompt: str
    needle: str
    question: str
    max_new_tokens = 32  # InfLLM/EM-LLM dataset2maxlen

    def make_key(self, rng: random.Random) -> str:
        raise NotImplementedError

    def records(self, ctx: TaskContext, length: int, n: int, seed: int) -> list[Record]:
        fitter = Fitter(ctx.tokenizer, length)
        out = []
        for i, depth in enumerate(spread_depths(ctx, n)):
            key = self.make_key(sample_rng(seed, self.name, i))
            needle = self.needle.format(key=key)

            def build(k: int, key: str = key, needle: str = needle, depth: float = depth, i: int = i) -> Record:
                before = int(round(k * depth))
                context = NOISE_LINE * before + needle + NOISE_LINE * (k - before)
                return Record(context=self.prompt + context + "\n\n", question=self.question, answer_prefix="",
                              answer=[key], max_new_tokens=self.max_new_tokens, task=self.name,
                              metric="first_int_match", id=f"{self.name}-{length}-{i}",
                              meta={"depth": depth, "length": length})

            out.append(fitter.fit(build, "noise"))
        return out


@register_task
class IBPasskey(_NeedleInNoise):
    name = "ib_passkey"
    description = "InfiniteBench Retrieve.PassKey: 5 random digits in noise lines; first integer must match"
    prompt = PASSKEY_PROMPT
    needle = "The pass key is {key}. Remember it. {key} is the pass key.\n"
    question = "What is the pass key?"

    def make_key(self, rng: random.Random) -> str:
        return "".join(str(rng.randint(0, 9)) for _ in range(5))


@register_task
class IBNumberString(_NeedleInNoise):
    name = "ib_number_string"
    description = "InfiniteBench Retrieve.Number: 10 digits with repeats in noise lines; first integer must match"
    prompt = NUMBER_PROMPT
    needle = "The sequence of digits is {key}. Remember it. {key} is the sequence of digits.\n"
    question = "What is the sequence of digits?"

    def make_key(self, rng: random.Random) -> str:
        digits = [str(rng.randint(0, 9)) for _ in range(5)]
        for j in range(5):  # InfiniteBench: duplicate a random digit in place, five times
            pos = rng.randint(0, 5 + j - 1)
            digits.insert(pos, digits[pos])
        return "".join(digits)


@register_task
class IBKVRetrieval(Task):
    name = "ib_kv_retrieval"
    description = "InfiniteBench Retrieve.KV: JSON of UUID->UUID pairs; gold value must be a word of the answer"

    def records(self, ctx: TaskContext, length: int, n: int, seed: int) -> list[Record]:
        fitter = Fitter(ctx.tokenizer, length)
        out = []
        for i, depth in enumerate(spread_depths(ctx, n)):
            rng = sample_rng(seed, self.name, i)
            pairs: list[tuple[str, str]] = []

            def grow(k: int, rng: random.Random = rng, pairs: list[tuple[str, str]] = pairs) -> None:
                while len(pairs) < k + 1:
                    pairs.append((str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                                  str(uuid.UUID(int=rng.getrandbits(128), version=4))))

            def build(k: int, pairs: list[tuple[str, str]] = pairs, depth: float = depth, i: int = i,
                      grow=grow) -> Record:  # noqa: ANN001
                grow(k)
                gold_key, gold_value = pairs[0]
                items = pairs[1:k + 1]
                items.insert(int(round(depth * k)), (gold_key, gold_value))
                data = "JSON data:\n" + json.dumps(dict(items), ensure_ascii=False)
                return Record(context=("Extract the value corresponding to the specified key "
                                       f"\"{gold_key}\" in the JSON object below.\n\n{data}\n\n"),
                              question=f"Key: \"{gold_key}\"\nThe value associated with the specified key is: ",
                              answer_prefix="", answer=[gold_value], max_new_tokens=100, task=self.name,
                              metric="kv_retrieval", id=f"{self.name}-{length}-{i}",
                              meta={"depth": depth, "length": length})

            out.append(fitter.fit(build, "pairs"))
        return out
