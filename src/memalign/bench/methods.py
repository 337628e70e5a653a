"""The attention methods the runner compares, looked up by name in a registry.

Every method answers one prompt greedily from the same token ids under the same budget:

* ``full``: the unmodified model through ``model.generate`` with chunked prefill (``prefill_chunk_size``;
  ``generate`` keeps only the last position's logits), greedy decoding.
* memory methods, all built on :class:`memalign.memory.EpisodicMemory` with one :class:`Budget`:
  ``streaming`` (attention sinks + a window that gets the whole budget: ``n_mem = 0``), ``infllm``
  (fixed 128-token blocks), ``em-llm`` (surprise segmentation) and the EM-LLM variants with graph
  refinement and/or the contiguity buffer. Equal budget means equal ``n_init + n_local + n_mem``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedModel

from memalign.errors import ConfigError
from memalign.memory import EMConfig, EpisodicMemory
from memalign.memory.validate import MAX_TOKENS, check_int
from memalign.registry import Registry


@dataclass(frozen=True)
class Budget:
    """The KV budget shared by all memory methods: sinks + local window + retrieved memory tokens."""

    n_init: int = 128
    n_local: int = 4096
    n_mem: int = 2048
    chunk_size: int = 512
    # Relative position of every memory key (EMConfig.memory_distance); None = n_local - 1, as EM-LLM.
    # Not a budget, but shared by all retrieving methods so they stay comparable.
    memory_distance: int | None = None
    # EMConfig.last_token_alone: the prompt's last token is its own step (the reference driver), so the
    # first answer token follows a retrieval for that token's query. Runs before this field existed had
    # the last token inside its chunk (``False``); the report labels them so.
    last_token_alone: bool = True

    def __post_init__(self) -> None:
        for name in ("n_init", "n_local", "n_mem", "chunk_size"):
            check_int("Budget", name, getattr(self, name), 0, MAX_TOKENS)
        check_int("Budget", "memory_distance", self.memory_distance, 0, MAX_TOKENS, optional=True)
        if self.chunk_size == 0:
            raise ConfigError("budget chunk_size must be > 0")
        if self.n_local < self.chunk_size:
            raise ConfigError(
                f"budget n_local ({self.n_local}) must be >= chunk_size ({self.chunk_size}): "
                "each chunk's queries attend their own chunk through the local window"
            )

    @property
    def total(self) -> int:
        return self.n_init + self.n_local + self.n_mem

    def tag(self) -> str:
        tag = f"i{self.n_init}-l{self.n_local}-m{self.n_mem}-c{self.chunk_size}"
        if self.memory_distance is not None:
            tag += f"-d{self.memory_distance}"
        # A distinct name, so a resumed sweep never mixes items of the two drivers in one directory.
        return f"{tag}-lt" if self.last_token_alone else tag


class Method(ABC):
    """Generates an answer for one prompt. ``config()`` is what the result directory records."""

    name: str
    uses_budget: bool = True

    @abstractmethod
    def generate(
        self, model: PreTrainedModel, input_ids: torch.Tensor, max_new_tokens: int, stop_ids: set[int]
    ) -> list[int]:
        """New token ids (the stop token excluded)."""

    def config(self) -> dict[str, Any]:
        return {"name": self.name}


def _truncate_at_stop(ids: list[int], stop_ids: set[int]) -> list[int]:
    for j, token in enumerate(ids):
        if token in stop_ids:
            return ids[:j]
    return ids


@dataclass
class FullAttention(Method):
    """The unmodified model with chunked prefill (bounded activation memory, exact attention)."""

    prefill_chunk: int = 2048
    name: str = "full"
    uses_budget: bool = False

    def __post_init__(self) -> None:
        if self.prefill_chunk <= 0:
            raise ConfigError("prefill_chunk must be > 0")

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "prefill_chunk": self.prefill_chunk}

    @torch.inference_mode()
    def generate(
        self, model: PreTrainedModel, input_ids: torch.Tensor, max_new_tokens: int, stop_ids: set[int]
    ) -> list[int]:
        config = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            prefill_chunk_size=self.prefill_chunk,
            eos_token_id=sorted(stop_ids),
            pad_token_id=0,
        )
        with _only_this_generation_config(model, config):
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
        return _truncate_at_stop([int(t) for t in out[0, input_ids.shape[1] :].tolist()], stop_ids)


@contextmanager
def _only_this_generation_config(model: PreTrainedModel, config: GenerationConfig) -> Iterator[None]:
    """Plain greedy decoding, whatever the checkpoint's ``generation_config.json`` asks for.

    ``generate`` fills every field the passed config leaves unset from ``model.generation_config``, so a
    checkpoint's ``repetition_penalty``, ``no_repeat_ngram_size`` or ``suppress_tokens`` would silently
    change the baseline's answers (and make it incomparable with the memory methods, which decode by
    argmax). The model's own config is set aside for the call and restored afterwards.
    """
    saved = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved


@dataclass
class MemoryMethod(Method):
    """A method realised by the EM engine: the budget plus the config fields that define the variant."""

    name: str
    budget: Budget
    fields: dict[str, Any] = field(default_factory=dict)
    give_window_the_memory: bool = False  # streaming: the window gets n_local + n_mem, no retrieval
    # Set by generate(): per memory layer, the token ranges the last prompt token attended.
    last_attended: list[list[tuple[int, int]]] | None = field(default=None, init=False, repr=False)

    def em_fields(self) -> dict[str, Any]:
        b = self.budget
        if self.give_window_the_memory:
            sizes = {"n_init": b.n_init, "n_local": b.n_local + b.n_mem, "n_mem": 0}
        else:
            sizes = {"n_init": b.n_init, "n_local": b.n_local, "n_mem": b.n_mem}
        distance = {} if b.memory_distance is None else {"memory_distance": b.memory_distance}
        return {**sizes, "chunk_size": b.chunk_size, **distance, "last_token_alone": b.last_token_alone, **self.fields}

    def em_config(self) -> EMConfig:
        return EMConfig(**self.em_fields())

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "budget": asdict(self.budget), "em_config": self.em_fields()}

    @torch.inference_mode()
    def generate(
        self, model: PreTrainedModel, input_ids: torch.Tensor, max_new_tokens: int, stop_ids: set[int]
    ) -> list[int]:
        with EpisodicMemory(model, self.em_config()) as mem:
            cache, logits = mem.prefill(input_ids)
            # What the query that produces the first answer token could see, per memory layer.
            sequence = cache.sequences[0]
            self.last_attended = [sequence.layers[i].attended_spans() for i in sequence.memory_layers]
            new = mem.decode(cache, logits, max_new_tokens, eos_token_id=sorted(stop_ids))
        return _truncate_at_stop([int(t) for t in new[0].tolist()], stop_ids)


MethodFactory = Callable[[Budget], Method]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: how to build it from a budget, and the line ``memalign bench methods`` shows."""

    factory: MethodFactory
    description: str
    uses_budget: bool = True

    def __call__(self, budget: Budget) -> Method:
        return self.factory(budget)


METHODS: Registry[MethodSpec] = Registry("method", hint="(`memalign bench methods` lists them)")


def register_method(
    name: str, description: str, *, uses_budget: bool = True
) -> Callable[[MethodFactory], MethodFactory]:
    """Decorator: register a method factory under ``name``; a taken name raises at import time."""

    def deco(factory: MethodFactory) -> MethodFactory:
        METHODS.add(name, MethodSpec(factory, description, uses_budget))
        return factory

    return deco


def make_method(name: str, budget: Budget, prefill_chunk: int = 2048) -> Method:
    """The method registered as ``name`` for ``budget``; an unknown name lists the known ones."""
    method = METHODS[name](budget)
    if isinstance(method, FullAttention):
        method.prefill_chunk = prefill_chunk
        method.__post_init__()
    return method


def is_memory_method(name: str) -> bool:
    """True for the methods that run on the EM engine under a KV budget (everything but ``full``)."""
    return name in METHODS and METHODS[name].uses_budget


_SURPRISE = {"segmentation": "surprise", "refinement": None, "contiguity_fraction": 0.0}
_CONTIGUITY = 0.3  # EM-LLM's shipped contiguity_buffer_size


@register_method("full", "unmodified model, full attention (chunked prefill); ignores the budget", uses_budget=False)
def _full(budget: Budget) -> Method:
    return FullAttention()


@register_method("streaming", "StreamingLLM: n_init sinks + a window of n_local + n_mem tokens, no retrieval")
def _streaming(budget: Budget) -> Method:
    return MemoryMethod("streaming", budget, {}, give_window_the_memory=True)


@register_method("infllm", "InfLLM: fixed 128-token blocks, top-k blocks by representative keys")
def _infllm(budget: Budget) -> Method:
    return MemoryMethod(
        "infllm",
        budget,
        {"segmentation": "uniform", "max_block_size": 128, "refinement": None, "contiguity_fraction": 0.0},
    )


@register_method("em-llm", "EM-LLM_S: surprise-segmented events, similarity retrieval")
def _em(budget: Budget) -> Method:
    return MemoryMethod("em-llm", budget, dict(_SURPRISE))


@register_method("em-llm+refine", "EM-LLM_SM: surprise + modularity boundary refinement")
def _em_refine(budget: Budget) -> Method:
    return MemoryMethod("em-llm+refine", budget, {**_SURPRISE, "refinement": "modularity"})


@register_method("em-llm+contiguity", "EM-LLM_S+C: surprise + contiguity buffer (30% of n_mem)")
def _em_contiguity(budget: Budget) -> Method:
    return MemoryMethod("em-llm+contiguity", budget, {**_SURPRISE, "contiguity_fraction": _CONTIGUITY})


@register_method("em-llm+refine+contiguity", "EM-LLM_SM+C: refinement and contiguity buffer")
def _em_refine_contiguity(budget: Budget) -> Method:
    return MemoryMethod(
        "em-llm+refine+contiguity",
        budget,
        {**_SURPRISE, "refinement": "modularity", "contiguity_fraction": _CONTIGUITY},
    )
