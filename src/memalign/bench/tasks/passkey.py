"""Passkey retrieval in the Landmark-attention / InfLLM format: a 1..50000 key hidden in noise sentences."""

from __future__ import annotations

from memalign.bench.records import Record
from memalign.bench.tasks.base import Fitter, Task, TaskContext, register_task, sample_rng, spread_depths
from memalign.bench.tasks.haystack import NOISE

TASK_DESCRIPTION = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
                    "I will quiz you about the important information there.")


@register_task
class Passkey(Task):
    name = "passkey"
    description = "Landmark/InfLLM passkey: integer 1..50000 in repeated noise; score = first integer matches"

    def records(self, ctx: TaskContext, length: int, n: int, seed: int) -> list[Record]:
        fitter = Fitter(ctx.tokenizer, length)
        out = []
        for i, depth in enumerate(spread_depths(ctx, n)):
            key = sample_rng(seed, self.name, i).randint(1, 50000)
            info = f"The pass key is {key}. Remember it. {key} is the pass key."

            def build(k: int, key: int = key, info: str = info, depth: float = depth, i: int = i) -> Record:
                before = int(round(k * depth))
                context = "\n".join([TASK_DESCRIPTION, " ".join([NOISE] * before), info,
                                     " ".join([NOISE] * (k - before))]) + "\n"
                return Record(context=context, question="What is the pass key?", answer_prefix="The pass key is",
                              answer=[str(key)], max_new_tokens=10, task=self.name, metric="first_int_match",
                              id=f"{self.name}-{length}-{i}", meta={"depth": depth, "length": length})

            out.append(fitter.fit(build, "noise"))
        return out
