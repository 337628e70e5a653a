"""``EMConfig``: every EM-LLM hyper-parameter in one validated dataclass, plus YAML presets.

Every field is checked at construction -- its type (an integer field refuses ``32.5`` and ``True``, a
float field ``nan``), its range and the combinations that cannot work -- and a bad value raises
:class:`~memalign.errors.ConfigError` naming the field, the value and what is allowed, so a bad sweep
fails before a model is loaded rather than deep inside attention. Bounds that need the model (the
memory distance must be one of its positions) are checked by :meth:`EMConfig.check_model` when memory
is attached.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from memalign.errors import ConfigError, UnknownNameError
from memalign.memory.config_file import read_yaml_mapping, require_mapping
from memalign.memory.refinement import REFINEMENT_METRICS
from memalign.memory.segmentation import BOUNDARY_STRATEGIES
from memalign.memory.store_config import StoreConfig
from memalign.memory.validate import (
    MAX_INDEX,
    MAX_SEED,
    MAX_TOKENS,
    check_bool,
    check_choice,
    check_float,
    check_int,
)
from memalign.registry import Registry

BOUNDARY_CONVENTIONS = ("paper", "reference")
# Fields whose default is derived from other fields; a replace() that changes those re-derives them.
_DERIVED = ("surprise_window", "memory_distance")


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
    segmentation: str = "surprise"
    gamma: float = 1.0
    surprise_window: int | None = None
    boundary: str = "paper"
    refinement: str | None = None
    refine_from_layer: int = 20
    contiguity_fraction: float = 0.0
    memory_distance: int | None = None
    seed: int = 0
    store: StoreConfig = field(default_factory=StoreConfig)

    def __post_init__(self) -> None:
        em = "EMConfig"
        for name in ("n_local", "chunk_size", "min_block_size", "max_block_size", "repr_topk"):
            check_int(em, name, getattr(self, name), 1, MAX_TOKENS)
        for name in ("n_init", "n_mem"):
            check_int(em, name, getattr(self, name), 0, MAX_TOKENS)
        check_bool(em, "last_token_alone", self.last_token_alone)
        check_float(em, "gamma", self.gamma, 0.0, math.inf, high_open=True)
        check_int(em, "surprise_window", self.surprise_window, 2, MAX_TOKENS, optional=True)  # a std needs 2
        check_choice(em, "boundary", self.boundary, BOUNDARY_CONVENTIONS)
        check_int(em, "refine_from_layer", self.refine_from_layer, 0, MAX_INDEX)
        check_float(em, "contiguity_fraction", self.contiguity_fraction, 0.0, 1.0, high_open=True)
        check_int(em, "memory_distance", self.memory_distance, 0, MAX_TOKENS - 1, optional=True)
        check_int(em, "seed", self.seed, 0, MAX_SEED)
        _check_name(BOUNDARY_STRATEGIES, "segmentation", self.segmentation)
        if self.refinement is not None:
            _check_name(REFINEMENT_METRICS, "refinement", self.refinement)
        self.store = StoreConfig.from_dict(self.store)
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
        self._derived = {name for name in _DERIVED if getattr(self, name) is None}
        if self.surprise_window is None:
            # The reference's window (the tokens before the chunk that still fit the local window); a
            # degenerate window (chunk ~ n_local) falls back to n_local so thresholds stay meaningful.
            gap = self.n_local - self.chunk_size
            self.surprise_window = gap if gap >= 16 else max(self.n_local, 2)
        if self.memory_distance is None:
            self.memory_distance = self.n_local - 1

    def check_model(self, max_positions: int | None, model: str = "the model") -> None:
        """Refuse token counts the model cannot place: every window distance and the memory distance must
        be one of its positions (``max_position_embeddings``; ``None``: the model states no limit)."""
        if max_positions is None:
            return
        if self.n_local > max_positions:
            raise ConfigError(
                f"EMConfig.n_local={self.n_local} exceeds the {max_positions} positions of {model} "
                f"(max_position_embeddings): lower n_local to at most {max_positions}"
            )
        if self.memory_distance >= max_positions:
            raise ConfigError(
                f"EMConfig.memory_distance={self.memory_distance} is outside the {max_positions} positions of "
                f"{model} (max_position_embeddings): use a value in [0, {max_positions - 1}] or None (n_local - 1)"
            )
        if self.n_init > max_positions:
            raise ConfigError(
                f"EMConfig.n_init={self.n_init} exceeds the {max_positions} positions of {model} "
                f"(max_position_embeddings): lower n_init to at most {max_positions}"
            )

    # ---- derived quantities ----------------------------------------------------------------------
    @property
    def uses_memory(self) -> bool:
        """False for a pure sliding window with sinks (StreamingLLM): nothing is retrieved."""
        return self.n_mem > 0

    def replace(self, **changes: Any) -> EMConfig:
        """A copy with ``changes``; fields left at their derived default follow the new values (a preset's
        ``memory_distance`` is ``n_local - 1`` of the *new* ``n_local``, not of the preset's)."""
        derived = getattr(self, "_derived", set())
        for name in derived:
            changes.setdefault(name, None)
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown EMConfig field(s): {', '.join(unknown)}; known: {', '.join(_field_names())}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["store"].get("offload_dir") is not None:
            data["store"]["offload_dir"] = str(data["store"]["offload_dir"])
        return data

    # ---- YAML ---------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> EMConfig:
        """A config from a mapping of field values; unknown fields are refused, naming the known ones."""
        data = require_mapping(data, "an EM config")
        unknown = sorted(set(data) - set(_field_names()))
        if unknown:
            raise ConfigError(f"unknown EMConfig field(s): {', '.join(unknown)}; known: {', '.join(_field_names())}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> EMConfig:
        """Read an EM config file: the fields at top level, or under a ``memory:`` key. Every error names
        the file (and the field)."""
        data = read_yaml_mapping(path, "EM config")
        if "memory" in data:
            if len(data) > 1:
                others = ", ".join(sorted(k for k in data if k != "memory"))
                raise ConfigError(f"EM config {str(path)!r}: unknown key(s) {others} next to `memory:`")
            data = require_mapping(data["memory"], f"EM config {str(path)!r} key memory")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise type(exc)(f"EM config {str(path)!r}: {exc}") from None

    @classmethod
    def preset(cls, name: str | Path, **overrides: Any) -> EMConfig:
        """A named preset from ``configs/`` (``mistral``, ``llama3``, ``llama31``, ``phi3``, ``phi35``, ``qwen3``,
        ``small``) or a path to a YAML file, with field overrides."""
        if not isinstance(name, str | Path):
            raise ConfigError(f"an EM preset is a name or a YAML path, got {name!r} ({type(name).__name__})")
        path = Path(name)
        if isinstance(name, str) and not path.suffix and not path.is_file():
            path = EM_PRESETS[name]
        config = cls.from_yaml(path)
        return config.replace(**overrides) if overrides else config


def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(EMConfig)]


def _check_name(registry: Registry[Any], name: str, value: Any) -> None:
    try:
        registry.resolve(value)
    except UnknownNameError as exc:
        raise UnknownNameError(f"EMConfig.{name}: {exc}") from None


def _packaged_presets() -> Registry[Path]:
    presets: Registry[Path] = Registry("EM preset", hint="(or pass the path of an EM config YAML)")
    folder = resources.files("memalign").joinpath("configs")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("em-") and entry.name.endswith(".yaml"):
            presets.add(entry.name[3:-5], Path(str(entry)))
    return presets


EM_PRESETS = _packaged_presets()


def em_presets() -> list[str]:
    """Names of the packaged presets (``EMConfig.preset(name)``)."""
    return sorted(EM_PRESETS)
