"""The attention methods the runner compares, looked up by name in a registry.

Every method answers one prompt greedily from the same token ids under the same budget:

* ``full``: the unmodified model. Chunked prefill into a ``DynamicCache`` through the base model
  (no LM head, so full-vocabulary logits are never materialised for the prompt), the head applied to
  the last position only, then greedy decoding.
* memory methods, all built on :class:`memalign.memory.EpisodicMemory` with one :class:`Budget`:
  ``streaming`` (attention sinks + a window that gets the whole budget: ``n_mem = 0``), ``infllm``
  (fixed 128-token blocks), ``em-llm`` (surprise segmentation) and the EM-LLM variants with graph
  refinement and/or the contiguity buffer. Equal budget means equal ``n_init + n_local + n_mem``.

Until the EM engine exports ``EMConfig`` and ``EpisodicMemory`` the memory methods raise
:class:`EngineUnavailableError`; nothing is emulated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel

from memalign.errors import ConfigError, MemalignError


class EngineUnavailableError(MemalignError, RuntimeError):
    """A memory method was asked for but ``memalign.memory`` does not provide the EM engine yet."""


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
            if getattr(self, name) < 0:
                raise ConfigError(f"budget {name} must be >= 0, got {getattr(self, name)}")
        if self.memory_distance is not None and self.memory_distance < 0:
            raise ConfigError(f"memory_distance must be >= 0, got {self.memory_distance}")
        if self.chunk_size == 0:
            raise ConfigError("budget chunk_size must be > 0")
        if self.n_local < self.chunk_size:
            raise ConfigError(f"budget n_local ({self.n_local}) must be >= chunk_size ({self.chunk_size}): "
                              "each chunk's queries attend their own chunk through the local window")

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
    def generate(self, model: PreTrainedModel, input_ids: torch.Tensor, max_new_tokens: int,
                 stop_ids: set[int]) -> list[int]:
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
    def generate(self, model: PreTrainedModel, input_ids: torch.Tensor, max_new_tokens: int,
                 stop_ids: set[int]) -> list[int]:
        base = getattr(model, model.base_model_prefix)
        head = model.get_output_embeddings()
        cache = DynamicCache(config=model.config)
        hidden = None
        for start in range(0, input_ids.shape[1], self.prefill_chunk):
            out = base(input_ids=input_ids[:, start:start + self.prefill_chunk], past_key_values=cache, use_cache=True)
            hidden = out.last_hidden_state[:, -1:]
        assert hidden is not None  # input_ids is never empty: a prompt has at least the template tokens
        token = int(head(hidden)[0, -1].argmax())  # soft-capping (Gemma) is monotonic: argmax unchanged
        generated: list[int] = []
        for _ in range(max_new_tokens):
            if token in stop_ids:
                break
            generated.append(token)
            if len(generated) == max_new_tokens:
                break
            step = model(input_ids=torch.tensor([[token]], device=input_ids.device), past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
            token = int(step.logits[0, -1].argmax())
        return generated


def em_api() -> tuple[type, type]:
    """``(EMConfig, EpisodicMemory)`` from :mod:`memalign.memory`, or a clear error while it is not there."""
    try:
        from memalign.memory import EMConfig, EpisodicMemory  # type: ignore[attr-defined]
    except ImportError as exc:
        raise EngineUnavailableError(
            "EM engine not available: memalign.memory does not export EMConfig/EpisodicMemory yet "
            f"({exc}); memory methods (streaming, infllm, em-llm*) need it. Run `--methods full` meanwhile."
        ) from None
    return EMConfig, EpisodicMemory


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
        return {**sizes, "chunk_size": b.chunk_size, **distance, "last_token_alone": b.last_token_alone,
                **self.fields}

    def em_config(self) -> Any:
        em_config_cls, _ = em_api()
        return em_config_cls(**self.em_fields())

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "budget": asdict(self.budget), "em_config": self.em_fields()}

    @torch.inference_mode()
    def generate(self, model: PreTrainedModel, input_ids: torch.Tensor, max_new_tokens: int,
                 stop_ids: set[int]) -> list[int]:
        _, memory_cls = em_api()
        cfg = self.em_config()
        with memory_cls(model, cfg) as mem:
            cache, logits = mem.prefill(input_ids)
            # What the query that produces the first answer token could see, per memory layer.
            sequence = cache.sequences[0]
            self.last_attended = [sequence.layers[i].attended_spans() for i in sequence.memory_layers]
            new = mem.decode(cache, logits, max_new_tokens, eos_token_id=sorted(stop_ids))
        return _truncate_at_stop([int(t) for t in new[0].tolist()], stop_ids)


MethodFactory = Callable[[Budget], Method]
METHODS: dict[str, MethodFactory] = {}
DESCRIPTIONS: dict[str, str] = {}


def register_method(name: str, description: str) -> Callable[[MethodFactory], MethodFactory]:
    def deco(factory: MethodFactory) -> MethodFactory:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name], DESCRIPTIONS[name] = factory, description
        return factory
    return deco


def make_method(name: str, budget: Budget, prefill_chunk: int = 2048) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    method = METHODS[name](budget)
    if isinstance(method, FullAttention):
        method.prefill_chunk = prefill_chunk
    return method


def is_memory_method(name: str) -> bool:
    return name in METHODS and name != "full"


_SURPRISE = {"segmentation": "surprise", "refinement": None, "contiguity_fraction": 0.0}
_CONTIGUITY = 0.3  # EM-LLM's shipped contiguity_buffer_size


@register_method("full", "unmodified model, full attention (chunked prefill); ignores the budget")
def _full(budget: Budget) -> Method:
    return FullAttention()


@register_method("streaming", "StreamingLLM: n_init sinks + a window of n_local + n_mem tokens, no retrieval")
def _streaming(budget: Budget) -> Method:
    return MemoryMethod("streaming", budget, {}, give_window_the_memory=True)


@register_method("infllm", "InfLLM: fixed 128-token blocks, top-k blocks by representative keys")
def _infllm(budget: Budget) -> Method:
    return MemoryMethod("infllm", budget, {"segmentation": "uniform", "max_block_size": 128, "refinement": None,
                                            "contiguity_fraction": 0.0})


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
    return MemoryMethod("em-llm+refine+contiguity", budget,
                        {**_SURPRISE, "refinement": "modularity", "contiguity_fraction": _CONTIGUITY})
