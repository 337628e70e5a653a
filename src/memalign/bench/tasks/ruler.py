"""RULER's synthetic tasks (Hsieh et al., 2024), regenerated offline and calibrated to the model's tokenizer.

Task parameters, templates, answer prefixes, generation budgets and scorers follow RULER's
``synthetic.yaml`` / ``constants.py``: NIAH single 1/2/3, multikey 1/2/3, multivalue, multiquery
(string_match_all), variable tracking (1 chain x 4 hops, with RULER's one in-context example),
common-words extraction (10 words x30 among words x3, with an example) and frequent-words
extraction (Zipf alpha=2 over 6-letter coded words, the top-ranked one being the '...' noise).

Differences, all forced by working offline: essay haystacks come from ``--haystack`` and are split
into sentences by a regex (RULER uses nltk punkt); needle keys come from built-in word lists and
common-words draws from built-in words plus the tokenizer's whole-word vocabulary (RULER uses the
``wonderwords`` lists). Random positions are drawn as fractions before the filler size is searched,
so a sample's content does not move while its length is calibrated.
"""

from __future__ import annotations

import functools
import random
import string
import uuid
from dataclasses import dataclass

from memalign.bench.records import Record
from memalign.bench.tasks.base import (
    Builder,
    SampledTask,
    Task,
    TaskContext,
    add_task,
    fit_each,
    register_task,
    sample_rng,
)
from memalign.bench.tasks.haystack import NOISE, essay_sentences
from memalign.bench.tasks.words import key_words, vocabulary_words
from memalign.errors import ConfigError

NIAH_CONTEXT = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
)
NIAH_QUESTION = "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
NIAH_PREFIX = "The special magic {type_needle_v} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
DEPTHS = [round(i * 100 / 39) / 100 for i in range(40)]  # RULER: np.linspace(0, 100, 40) rounded, in [0, 1]


def _random_value(rng: random.Random, kind: str) -> str:
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return rng.choice(_KEYS)


_KEYS = key_words()


@dataclass(frozen=True)
class _NiahSpec:
    haystack: str  # noise | essay | needle
    key: str  # words | uuids
    value: str  # numbers | uuids
    num_k: int = 1
    num_v: int = 1
    num_q: int = 1


class _RulerNiah(SampledTask):
    """One RULER NIAH variant: its haystack, key and value kinds and counts are its :class:`_NiahSpec`."""

    filler = "haystack"

    def __init__(self, name: str, spec: _NiahSpec, description: str) -> None:
        self.name, self.spec, self.description = name, spec, description

    def sample(self, ctx: TaskContext, length: int, seed: int, i: int) -> Builder:
        spec = self.spec
        sentences = essay_sentences(ctx.require_haystack(self.name)) if spec.haystack == "essay" else ()
        rng = sample_rng(seed, self.name, i)
        keys: list[str] = []
        while len(keys) < spec.num_k:
            k = _random_value(rng, spec.key)
            if k not in keys:
                keys.append(k)
        values = [[_random_value(rng, spec.value) for _ in range(spec.num_v)] for _ in keys]
        needles = [
            NEEDLE.format(type_needle_v=spec.value, key=k, value=v)
            for k, vs in zip(keys, values, strict=True)
            for v in vs
        ]
        rng.shuffle(needles)
        if spec.haystack == "essay":
            depths = sorted(rng.sample(DEPTHS, len(needles)))
        else:
            depths = sorted(rng.random() for _ in needles)
        q_idx = rng.sample(range(spec.num_k), spec.num_q)
        queries = [keys[j] for j in q_idx]
        answers = [v for j in q_idx for v in values[j]]
        query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
        start = rng.randrange(max(1, len(sentences)))
        distractors = _DistractorStream(random.Random(f"{seed}/{self.name}/{i}/distractors"), spec, set(keys))

        def build(k: int) -> Record:
            if spec.haystack == "essay":
                hay = [sentences[(start + j) % len(sentences)] for j in range(k)]
                joiner = " "
            elif spec.haystack == "noise":
                hay, joiner = [NOISE] * k, "\n"
            else:
                hay, joiner = distractors.take(k), "\n"
            units = list(hay)
            for needle, depth in sorted(zip(needles, depths, strict=True), key=lambda nd: nd[1], reverse=True):
                units.insert(int(depth * k) if spec.haystack == "essay" else min(k, int(depth * (k + 1))), needle)
            return _niah_record(self.name, length, i, joiner.join(units), query, answers, spec, depths)

        return build


class _DistractorStream:
    """Distractor needles for the ``needle`` haystack, generated once and reused as a growing prefix."""

    def __init__(self, rng: random.Random, spec: _NiahSpec, real_keys: set[str]) -> None:
        self.rng, self.spec, self.real_keys = rng, spec, real_keys
        self.items: list[str] = []

    def take(self, k: int) -> list[str]:
        while len(self.items) < k:
            key = _random_value(self.rng, self.spec.key)
            if key in self.real_keys:
                continue
            value = _random_value(self.rng, self.spec.value)
            self.items.append(NEEDLE.format(type_needle_v=self.spec.value, key=key, value=value))
        return self.items[:k]


def _niah_record(
    task: str, length: int, i: int, context: str, query: str, answers: list[str], spec: _NiahSpec, depths: list[float]
) -> Record:
    parts = [NIAH_CONTEXT, NIAH_QUESTION, NIAH_PREFIX]
    type_v = spec.value
    if spec.num_q * spec.num_v == 1:  # RULER's singular rewrite of the whole template
        parts = [
            p.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer")
            for p in parts
        ]
        type_v = type_v[:-1]
    ctx_t, q_t, p_t = parts
    return Record(
        context=ctx_t.format(type_needle_v=type_v, context=context),
        question=q_t.format(type_needle_v=type_v, query=query),
        answer_prefix=p_t.format(type_needle_v=type_v, query=query),
        answer=answers,
        max_new_tokens=128,
        task=task,
        metric="string_match_all",
        id=f"{task}-{length}-{i}",
        # where the needles sit (fractions of the haystack), for analysis; not "depth", which
        # would make the runner group these random positions as a depth grid
        meta={"length": length, "needle_depths": [round(d, 4) for d in depths]},
    )


def _niah_task(name: str, spec: _NiahSpec, description: str) -> None:
    add_task(_RulerNiah(name, spec, description))


_niah_task("niah_single_1", _NiahSpec("noise", "words", "numbers"), "RULER: one word->7-digit number in noise")
_niah_task("niah_single_2", _NiahSpec("essay", "words", "numbers"), "RULER: one word->number in essays (--haystack)")
_niah_task("niah_single_3", _NiahSpec("essay", "words", "uuids"), "RULER: one word->UUID in essays (--haystack)")
_niah_task(
    "niah_multikey_1",
    _NiahSpec("essay", "words", "numbers", num_k=4),
    "RULER: 4 keys in essays, one asked (--haystack)",
)
_niah_task(
    "niah_multikey_2", _NiahSpec("needle", "words", "numbers"), "RULER: one needle among distractor needles (word keys)"
)
_niah_task(
    "niah_multikey_3",
    _NiahSpec("needle", "uuids", "uuids"),
    "RULER: one needle among distractor needles (UUID keys and values)",
)
_niah_task(
    "niah_multivalue",
    _NiahSpec("essay", "words", "numbers", num_v=4),
    "RULER: one key with 4 values, all asked (--haystack)",
)
_niah_task(
    "niah_multiquery", _NiahSpec("essay", "words", "numbers", num_k=4, num_q=4), "RULER: 4 keys, all asked (--haystack)"
)


# ---- variable tracking -------------------------------------------------------------------------------

VT_CONTEXT = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
VT_QUESTION = "Question: Find all variables that are assigned the value {query} in the text above."
VT_PREFIX = (
    "Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
    "assgined the value {query}, they are: "
)  # "assgined" is RULER's spelling


def _vt_chain(rng: random.Random, num_hops: int, name_len: int) -> tuple[list[str], list[str]]:
    names: list[str] = []
    while len(names) < num_hops + 1:
        name = "".join(rng.choices(string.ascii_uppercase, k=name_len))
        if name not in names:
            names.append(name)
    chain = [f"VAR {names[0]} = {rng.randint(10000, 99999)}"]
    chain += [f"VAR {names[j + 1]} = VAR {names[j]} " for j in range(num_hops)]
    return names, chain


def _vt_text(chain: list[str], positions: list[float], num_noise: int) -> str:
    sentences = [NOISE + "\n"] * num_noise
    slots = sorted(min(num_noise, int(p * (num_noise + 1))) for p in positions)
    for j, (slot, statement) in enumerate(zip(slots, chain, strict=True)):
        sentences.insert(slot + j, statement)
    return "\n".join(sentences).replace(". \n", ".\n")


@register_task
class VariableTracking(SampledTask):
    name = "vt"
    description = "RULER variable tracking: 1 chain x 4 hops in noise; name all 5 variables"
    metric = "string_match_all"
    max_new_tokens = 30
    filler = "noise"
    num_hops = 4

    def sample(self, ctx: TaskContext, length: int, seed: int, i: int) -> Builder:
        rng = sample_rng(seed, self.name, i)
        # RULER's in-context example: 3-letter names, a short noise, the answer spelled out.
        ex_names, ex_chain = _vt_chain(rng, self.num_hops, 3)
        ex_value = ex_chain[0].split("=")[-1].strip()
        example = (
            VT_CONTEXT.format(context=_vt_text(ex_chain, [rng.random() for _ in ex_chain], 5))
            + VT_QUESTION.format(query=ex_value)
            + " "
            + VT_PREFIX.format(num_v=self.num_hops + 1, query=ex_value)
            + " ".join(ex_names)
            + "\n\n"
        )
        names, chain = _vt_chain(rng, self.num_hops, 5)
        value = chain[0].split("=")[-1].strip()
        positions = [rng.random() for _ in chain]

        def build(k: int) -> Record:
            prompt = (
                example + VT_CONTEXT.format(context=_vt_text(chain, positions, k)),
                VT_QUESTION.format(query=value),
                VT_PREFIX.format(num_v=self.num_hops + 1, query=value).rstrip(),
            )
            return self.record(
                length, i, prompt, list(names), length=length, hop_depths=[round(p, 4) for p in positions]
            )

        return build


# ---- common words extraction ---------------------------------------------------------------------------

CWE_CONTEXT = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\n"
)
CWE_QUESTION = "Question: What are the 10 most common words in the above list?"
CWE_PREFIX = "Answer: The top 10 words that appear most often in the list are:"


def _cwe_list(
    words: list[str], num_words: int, freq_cw: int, freq_ucw: int, num_cw: int, rng: random.Random
) -> tuple[str, list[str]]:
    chosen = words[:num_words]
    common, uncommon = chosen[:num_cw], chosen[num_cw:]
    items = common * freq_cw + uncommon * freq_ucw
    rng.shuffle(items)
    return " ".join(f"{j + 1}. {w}" for j, w in enumerate(items)), common


def _cwe_frequencies(length: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """RULER's (example words, example cw/ucw frequencies) and (cw, ucw) frequencies of the real list."""
    return ((20, 3, 1), (6, 1)) if length < 4096 else ((40, 10, 3), (30, 3))


@register_task
class CommonWordsExtraction(Task):
    name = "cwe"
    description = "RULER common words: 10 words x30 among words x3 (x6/x1 under 4k); list the 10"
    metric = "string_match_all"
    max_new_tokens = 120
    num_cw = 10

    def records(self, ctx: TaskContext, length: int, n: int, seed: int) -> list[Record]:
        pool = vocabulary_words(ctx.tokenizer)  # once per call: it scans the whole tokenizer vocabulary
        records = fit_each(ctx, length, (self._sample(pool, length, seed, i) for i in range(n)), "words")
        listed = len(pool) - _cwe_frequencies(length)[0][0]  # the example's words are kept out of the list
        if any(record.meta["num_words"] >= listed for record in records):
            raise ConfigError(
                f"cwe: the word pool ({len(pool)} words with this tokenizer) is too small for "
                f"{length} tokens; use a shorter length"
            )
        return records

    def _sample(self, pool: list[str], length: int, seed: int, i: int) -> Builder:
        ex_args, freq = _cwe_frequencies(length)
        rng = sample_rng(seed, self.name, i)
        words = list(pool)
        rng.shuffle(words)
        ex_words = words[-ex_args[0] :]  # the example's words never appear in the real list
        ex_text, ex_answer = _cwe_list(ex_words, ex_args[0], ex_args[1], ex_args[2], self.num_cw, rng)
        example = (
            CWE_CONTEXT.format(context=ex_text)
            + CWE_QUESTION
            + " "
            + CWE_PREFIX
            + " "
            + " ".join(f"{j + 1}. {w}" for j, w in enumerate(ex_answer))
            + "\n"
        )
        words = words[: -ex_args[0]]

        def build(k: int) -> Record:
            num = min(len(words), self.num_cw + k)
            text, answer = _cwe_list(
                words, num, freq[0], freq[1], self.num_cw, random.Random(f"{seed}/{self.name}/{i}/{num}")
            )
            prompt = example + CWE_CONTEXT.format(context=text), CWE_QUESTION, CWE_PREFIX
            return self.record(length, i, prompt, answer, length=length, num_words=num)

        return build


# ---- frequent words extraction -------------------------------------------------------------------------

FWE_CONTEXT = (
    "Read the following coded text and track the frequency of each coded word. "
    "Find the three most frequently appeared coded words. {context}\n"
)
FWE_QUESTION = (
    "Question: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
FWE_PREFIX = "Answer: According to the coded text above, the three most frequently appeared words are:"


@functools.cache
def _zeta(alpha: float, terms: int = 10000) -> float:
    """Riemann zeta for alpha > 1: partial sum plus the Euler-Maclaurin tail (error < 1e-12 here)."""
    head = sum(k**-alpha for k in range(1, terms))
    return head + terms ** (1 - alpha) / (alpha - 1) + 0.5 * terms**-alpha


@register_task
class FrequentWordsExtraction(SampledTask):
    name = "fwe"
    description = "RULER frequent words: Zipf(2) coded words, '...' ranked first as noise; name the next 3"
    metric = "string_match_all"
    max_new_tokens = 50
    filler = "words"
    alpha = 2.0
    word_len = 6

    def sample(self, ctx: TaskContext, length: int, seed: int, i: int) -> Builder:
        vocab_size = max(10, (length - 50) // 50)  # RULER: max_seq_length // 50
        zeta = _zeta(self.alpha)
        rng = sample_rng(seed, self.name, i)
        vocab: set[str] = set()
        while len(vocab) < vocab_size:
            vocab.add("".join(rng.choices(string.ascii_lowercase, k=self.word_len)))
        ranked = sorted(vocab)
        rng.shuffle(ranked)
        ranked[0] = "..."

        def build(k: int) -> Record:
            num_words = max(1, k) * 10
            words = [w for rank, w in enumerate(ranked, 1) for _ in range(int(num_words * rank**-self.alpha / zeta))]
            random.Random(f"{seed}/{self.name}/{i}/{k}").shuffle(words)
            prompt = FWE_CONTEXT.format(context=" ".join(words)), FWE_QUESTION, FWE_PREFIX
            return self.record(length, i, prompt, ranked[1:4], length=length, num_words=num_words)

        return build
