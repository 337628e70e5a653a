"""Where an :class:`~memalign.memory.store.EventStore` keeps event K/V: device cache, host memory, disk.

Kept apart from :mod:`memalign.memory.config` so the tier settings can be validated, split across
stores and unit-tested on their own; ``EMConfig`` only has to carry one ``StoreConfig``.

The default (all ``None``) is the single-tier behaviour: every event's K/V stays in memory on the
model's device, nothing is written to disk.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from memalign.errors import ConfigError, OffloadError, StoreClosedError
from memalign.memory.validate import MAX_BYTES, MAX_TOKENS, check_bool, check_int, check_path

__all__ = ["MAX_PAGE_TOKENS", "OffloadError", "StoreClosedError", "StoreConfig"]

# Later pages are allocated whole: a page of 1M tokens is already GBs for a large model's layer.
MAX_PAGE_TOKENS = 1 << 20


@dataclass(frozen=True)
class StoreConfig:
    """Tier settings of one event store (one attention layer of one sequence).

    Budgets are *per store*; :meth:`per_store` splits a model-wide budget over ``n`` stores.

    * ``device_cache_tokens`` -- ``None``: event K/V live in memory on the model's device (no host
      tier; the default, and what a CPU model always does). An ``int``: event K/V live in host memory
      and at most this many tokens of recently gathered events stay cached on the accelerator (LRU), so
      accelerator memory is bounded whatever the input length. Size it at least ``n_mem`` so one
      retrieval fits. Ignored on a CPU model, where host memory *is* device memory.
    * ``host_budget_bytes`` -- ``None``: no disk tier. An ``int``: the in-memory K/V tier (host, or the
      device when ``device_cache_tokens`` is ``None``) holds at most this many bytes, *including* the
      representative vectors when they live in the same memory; older pages are spilled to a file under
      ``offload_dir`` and read back with ``pread`` (not kept mapped, so they do not stay resident). The
      representative vectors are never spilled (every retrieval scores all of them, ~10 % of the K/V
      bytes with 14-token events): once they fill the budget only two K/V pages stay in memory. Must
      hold at least two pages.
    * ``offload_dir`` -- parent directory of the per-store spill directories (``None``: the system
      temp dir). Each store creates its own subdirectory ``memalign-kv-<pid>-<host>-*`` (one file) on
      the first spill and removes it on ``close()``, on garbage collection, at interpreter exit and on
      SIGTERM/SIGINT; a new disk-tier store removes those of processes that no longer exist
      (:mod:`memalign.memory.spill`).
    * ``pin_memory`` -- page-lock host pages so host->device copies are asynchronous (``None``: pin
      when the model is on CUDA and a host tier exists).
    * ``page_tokens`` -- tokens per page: the unit of host allocation and of disk spill. Larger pages
      mean fewer allocations and writes, smaller ones a finer-grained budget.
    * ``repr_device_max_bytes`` -- ``None``: the representative-vector matrix stays on the model's
      device. An ``int``: once it would exceed this many bytes it moves to host memory for good and
      similarity scoring (``EventStore.scores``) runs there (one mat-vec, cheap even at 10M tokens).
    """

    device_cache_tokens: int | None = None
    host_budget_bytes: int | None = None
    offload_dir: str | os.PathLike[str] | None = None
    pin_memory: bool | None = None
    page_tokens: int = 4096
    repr_device_max_bytes: int | None = None

    def __post_init__(self) -> None:
        owner = "StoreConfig"
        check_int(owner, "device_cache_tokens", self.device_cache_tokens, 0, MAX_TOKENS, optional=True)
        check_int(owner, "host_budget_bytes", self.host_budget_bytes, 0, MAX_BYTES, optional=True)
        check_path(owner, "offload_dir", self.offload_dir, optional=True)
        check_bool(owner, "pin_memory", self.pin_memory, optional=True)
        check_int(owner, "page_tokens", self.page_tokens, 1, MAX_PAGE_TOKENS)
        check_int(owner, "repr_device_max_bytes", self.repr_device_max_bytes, 0, MAX_BYTES, optional=True)
        if self.offload_dir is not None:
            path = Path(self.offload_dir)
            if path.exists() and not path.is_dir():
                raise ConfigError(f"StoreConfig.offload_dir {str(path)!r} exists and is not a directory")

    @classmethod
    def from_dict(cls, data: Any) -> StoreConfig:
        """A config from a mapping (a YAML ``store:`` section); unknown keys are refused, naming the known ones."""
        if isinstance(data, StoreConfig):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"EMConfig.store must be a StoreConfig or a mapping of its fields, got {data!r} ({type(data).__name__})"
            )
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ConfigError(f"unknown StoreConfig field(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**data)

    def per_store(self, n_stores: int) -> StoreConfig:
        """This config with the byte budgets divided evenly over ``n_stores`` stores.

        ``device_cache_tokens`` is left alone: it is naturally per layer (each layer retrieves its own
        ``n_mem`` tokens), so the accelerator holds at most ``n_stores * device_cache_tokens`` tokens.
        """
        if n_stores < 1:
            raise ConfigError(f"per_store needs at least one store, got {n_stores}")

        def split(value: int | None) -> int | None:
            return None if value is None else value // n_stores

        return replace(
            self,
            host_budget_bytes=split(self.host_budget_bytes),
            repr_device_max_bytes=split(self.repr_device_max_bytes),
        )
