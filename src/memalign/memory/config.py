"""``EMConfig``: every EM-LLM hyper-parameter in one validated dataclass, plus YAML presets.

Impossible combinations raise :class:`~memalign.errors.ConfigError` at construction, naming the
field, so a bad sweep fails before a model is loaded rather than deep inside attention.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from memalign.errors import ConfigError
from memalign.memory.store_config import StoreConfig

Segmentation = Literal["surprise", "uniform", "random"]
Refinement = Literal["modularity", "conductance"]
BoundaryConvention = Literal["paper", "reference"]


@dataclass
class EMConfig:
    """EM-LLM settings. Token counts are per sequence; every layer shares the event boundaries.

    Attributes:
        n_init: initial (attention-sink) tokens always attended, at the memory distance.
        n_local: local window: each query attends its ``n_local`` most recent tokens (itself included)
            with true relative positions.
        n_mem: token budget of retrieved events per chunk of queries (contiguity buffer included;
            tokens that left the window but are not yet in an event count against it too).
        chunk_size: queries per retrieval (the driver's prefill chunk). Must not exceed ``n_local``.
        last_token_alone: feed a prompt's last token as its own one-token step, as the reference driver
            does. The first answer token then comes from a retrieval driven by that token's query alone,
            not by the mean query of a whole chunk that is mostly context (which can miss the one event
            the question asks about). ``False`` keeps the last token inside its chunk (one forward fewer).
        min_block_size / max_block_size: event size limits; shorter segments merge into the next one,
            longer ones are split; the last open segment waits for its closing boundary.
        repr_topk: representative keys per event and head (most attended while in the window), averaged.
        segmentation: ``surprise`` (EM-LLM), ``uniform`` (fixed ``max_block_size`` blocks = InfLLM),
            ``random`` (boundaries at random, same mean event size as ``uniform``; an ablation).
        gamma: threshold ``T = mean + gamma * std`` of the surprise of the preceding ``surprise_window`` tokens.
        surprise_window: defaults to ``n_local - chunk_size`` as the reference.
        boundary: ``paper`` starts an event *at* the surprising token; ``reference`` one token before it,
            as the released EM-LLM code does.
        refinement: optional boundary refinement by graph ``modularity`` (maximised) or ``conductance``
            (minimised) of key similarity, over keys of layers ``>= refine_from_layer``.
        contiguity_fraction: share of ``n_mem`` reserved for the neighbours of retrieved events (0 = off).
        memory_distance: relative position at which all memory keys sit for every query
            (default ``n_local - 1``, the oldest local distance, as EM-LLM/InfLLM).
        seed: for ``random`` segmentation.
        store: where event K/V live (accelerator LRU, host, a disk file past a host budget); the
            byte budgets are model-wide (split over layers and sequences). Default: all in memory.
    """

    n_init: int = 128
    n_local: int = 4096
    n_mem: int = 2048
    chunk_size: int = 512
    last_token_alone: bool = True
    min_block_size: int = 8
    max_block_size: int = 128
    repr_topk: int = 4
    segmentation: Segmentation = "surprise"
    gamma: float = 1.0
    surprise_window: int | None = None
    boundary: BoundaryConvention = "paper"
    refinement: Refinement | None = None
    refine_from_layer: int = 20
    contiguity_fraction: float = 0.0
    memory_distance: int | None = None
    seed: int = 0
    store: StoreConfig = field(default_factory=StoreConfig)
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("n_local", "chunk_size", "min_block_size", "max_block_size", "repr_topk"):
            if getattr(self, name) < 1:
                raise ConfigError(f"EMConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_init", "n_mem", "refine_from_layer", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"EMConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.chunk_size > self.n_local:
            raise ConfigError(
                f"EMConfig.chunk_size ({self.chunk_size}) > n_local ({self.n_local}): every query of a chunk must "
                "see the whole chunk inside its local window; lower chunk_size or raise n_local"
            )
        if self.min_block_size > self.max_block_size:
            raise ConfigError(
                f"EMConfig.min_block_size ({self.min_block_size}) > max_block_size ({self.max_block_size})"
            )
        if 0 < self.n_mem < self.max_block_size:
            raise ConfigError(
                f"EMConfig.n_mem ({self.n_mem}) is smaller than one event (max_block_size={self.max_block_size}): "
                "no event could ever be retrieved; use n_mem=0 for a pure sliding window (StreamingLLM) or "
                "raise n_mem"
            )
        if self.segmentation not in ("surprise", "uniform", "random"):
            raise ConfigError(f"EMConfig.segmentation must be surprise, uniform or random, got {self.segmentation!r}")
        if self.refinement not in (None, "modularity", "conductance"):
            raise ConfigError(f"EMConfig.refinement must be None, modularity or conductance, got {self.refinement!r}")
        if self.boundary not in ("paper", "reference"):
            raise ConfigError(f"EMConfig.boundary must be 'paper' or 'reference', got {self.boundary!r}")
        if self.gamma < 0:
            raise ConfigError(f"EMConfig.gamma must be >= 0, got {self.gamma}")
        if not 0.0 <= self.contiguity_fraction < 1.0:
            raise ConfigError(f"EMConfig.contiguity_fraction must be in [0, 1), got {self.contiguity_fraction}")
        if self.surprise_window is None:
            # The reference's window (the tokens before the chunk that still fit the local window); a
            # degenerate window (chunk ~ n_local) falls back to n_local so thresholds stay meaningful.
            gap = self.n_local - self.chunk_size
            self.surprise_window = gap if gap >= 16 else max(self.n_local, 2)
        if self.surprise_window < 2:
            raise ConfigError(
                f"EMConfig.surprise_window must be >= 2 (a std needs two values), got {self.surprise_window}"
            )
        if isinstance(self.store, dict):
            self.store = StoreConfig(**self.store)
        if self.memory_distance is None:
            self.memory_distance = self.n_local - 1
        if self.memory_distance < 0:
            raise ConfigError(f"EMConfig.memory_distance must be >= 0, got {self.memory_distance}")

    # ---- derived quantities ----------------------------------------------------------------------
    @property
    def uses_memory(self) -> bool:
        """False for a pure sliding window with sinks (StreamingLLM): nothing is retrieved."""
        return self.n_mem > 0

    @property
    def contiguity_tokens(self) -> int:
        return int(self.contiguity_fraction * self.n_mem)

    @property
    def attended_bound(self) -> int:
        """Most keys any query can attend: sinks + window + retrieved (+ tokens pending between the two)."""
        return self.n_init + self.n_local + self.n_mem + self.chunk_size

    def replace(self, **changes: Any) -> EMConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("extra")
        if data["store"].get("offload_dir") is not None:
            data["store"]["offload_dir"] = str(data["store"]["offload_dir"])
        return data

    # ---- YAML ---------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EMConfig:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown EMConfig field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> EMConfig:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read EM config {path}: {exc}") from None
        return cls.from_dict(data.get("memory", data))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EMConfig:
        """A named preset from ``configs/`` (``mistral``, ``llama3``, ``llama31``, ``phi3``, ``phi35``, ``qwen3``,
        ``small``) or a path to a YAML file, with field overrides."""
        path = Path(name)
        if not path.suffix:
            candidate = resources.files("memalign").joinpath("configs", f"em-{name}.yaml")
            if not candidate.is_file():
                raise ConfigError(f"unknown EM preset {name!r}; available: {', '.join(em_presets())}")
            path = Path(str(candidate))
        return cls.from_yaml(path).replace(**overrides) if overrides else cls.from_yaml(path)


def em_presets() -> list[str]:
    folder = resources.files("memalign").joinpath("configs")
    return sorted(p.name[3:-5] for p in folder.iterdir() if p.name.startswith("em-") and p.name.endswith(".yaml"))
