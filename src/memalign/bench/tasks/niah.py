"""Needle in a haystack (gkamradt) over real essays, swept over a depth x length grid.

The needle is inserted between sentences at the requested depth of the haystack (gkamradt inserts at a
token depth and then backs up to the previous sentence end: the same place up to one sentence); the
haystack size is calibrated in the model's tokens. No LLM judge: the score is the recall of the
needle's answer words in the reply.
"""

from __future__ import annotations

from memalign.bench.records import Record
from memalign.bench.tasks.base import Builder, Task, TaskContext, fit_each, register_task, spread_depths
from memalign.bench.tasks.haystack import essay_sentences

NEEDLE = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
ANSWER = "eat a sandwich and sit in Dolores Park on a sunny day"
QUESTION = (
    "What is the best thing to do in San Francisco? "
    "Don't give information outside the document or repeat your findings."
)
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@register_task
class NeedleInAHaystack(Task):
    name = "niah"
    description = "gkamradt needle (San Francisco sandwich) in essays from --haystack; depth grid; word recall"
    metric = "rouge1_recall"
    max_new_tokens = 32

    def records(self, ctx: TaskContext, length: int, n: int, seed: int) -> list[Record]:
        sentences = essay_sentences(ctx.require_haystack(self.name))
        depths = spread_depths(ctx, n, DEFAULT_DEPTHS)
        builders = (self._sample(sentences, length, seed, i, depth) for i, depth in enumerate(depths))
        return fit_each(ctx, length, builders, "haystack")

    def _sample(self, sentences: tuple[str, ...], length: int, seed: int, i: int, depth: float) -> Builder:
        # Sample i starts at a different essay sentence so repeated samples see different text.
        start = (i * 997 + seed * 7919) % len(sentences)

        def build(k: int) -> Record:
            hay = [sentences[(start + j) % len(sentences)] for j in range(k)]
            at = int(round(depth * k))
            text = " ".join(hay[:at] + [NEEDLE] + hay[at:])
            prompt = f"<document>\n{text}\n</document>\n\n", QUESTION, "The best thing to do in San Francisco is"
            return self.record(length, i, prompt, [ANSWER], depth=depth, length=length)

        return build
