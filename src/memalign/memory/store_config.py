"""Where an :class:`~memalign.memory.store.EventStore` keeps event K/V: device cache, host memory, disk.

Kept apart from :mod:`memalign.memory.config` so the tier settings can be validated, split across
stores and unit-tested on their own; ``EMConfig`` only has to carry one ``StoreConfig``.

The default (all ``None``) is the single-tier behaviour: every event's K/V stays in memory on the
model's device, nothing is written to disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from memalign.errors import ConfigError, MemalignError


class OffloadError(MemalignError, OSError):
    """Event K/V could not be moved to (or kept within) a storage tier: disk full, directory unwritable,
    or a budget too small for one event. The store is left consistent: every event stored before the
    error is still served, and the event whose storage failed is not counted."""


class StoreClosedError(MemalignError, RuntimeError):
    """An event store was used after ``close()`` (its files and buffers are gone)."""


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
      temp dir). Each store creates its own subdirectory (one file) on the first spill and removes it on
      ``close()``, on garbage collection and at interpreter exit.
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
        for name in ("device_cache_tokens", "host_budget_bytes", "repr_device_max_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"StoreConfig.{name} must be a non-negative integer or None, got {value!r}")
        if isinstance(self.page_tokens, bool) or not isinstance(self.page_tokens, int) or self.page_tokens < 1:
            raise ConfigError(f"StoreConfig.page_tokens must be a positive integer, got {self.page_tokens!r}")
        if self.pin_memory is not None and not isinstance(self.pin_memory, bool):
            raise ConfigError(f"StoreConfig.pin_memory must be True, False or None, got {self.pin_memory!r}")
        if self.offload_dir is not None:
            path = Path(self.offload_dir)
            if path.exists() and not path.is_dir():
                raise ConfigError(f"StoreConfig.offload_dir {str(path)!r} exists and is not a directory")

    @property
    def uses_disk(self) -> bool:
        return self.host_budget_bytes is not None

    def per_store(self, n_stores: int) -> StoreConfig:
        """This config with the byte budgets divided evenly over ``n_stores`` stores.

        ``device_cache_tokens`` is left alone: it is naturally per layer (each layer retrieves its own
        ``n_mem`` tokens), so the accelerator holds at most ``n_stores * device_cache_tokens`` tokens.
        """
        if n_stores < 1:
            raise ConfigError(f"per_store needs at least one store, got {n_stores}")

        def split(value: int | None) -> int | None:
            return None if value is None else value // n_stores

        return replace(self, host_budget_bytes=split(self.host_budget_bytes),
                       repr_device_max_bytes=split(self.repr_device_max_bytes))
