"""Event storage of one layer of one sequence: archived K/V, event spans and representative vectors.

Events are consecutive runs of tokens, so their K/V live in one append-only, paged archive per layer
(:class:`~memalign.memory.tiers.PagedArchive`) with event start offsets; a retrieval reads the selected
spans, merging adjacent events into one range (a Python loop per event, never per token).
Representative vectors (one [heads*head_dim] row per event) live in one growable, contiguous matrix
(geometric growth, so appends are amortised O(1)): scoring all events against a query is one mat-vec
followed by one top-k.

K/V sit in up to three tiers, set by a :class:`~memalign.memory.store_config.StoreConfig`:

* **device** -- by default the archive itself lives on the model's device (single tier). With
  ``device_cache_tokens`` the archive moves to host memory and an LRU of recently gathered events stays
  on the accelerator, bounded in tokens whatever the input length; :meth:`EventStore.prefetch` copies
  the next retrieval on a CUDA side stream so the copy overlaps compute.
* **host** -- pinned pages when the model is on CUDA (asynchronous copies). On a CPU model host memory
  *is* device memory: the archive is read directly and no cache copy is made.
* **disk** -- past ``host_budget_bytes`` the oldest pages are written to a spill file in a per-store
  temporary directory and read back with ``pread`` (never left mapped, so they stay off the resident
  set), removed on :meth:`EventStore.close`, at garbage collection and at exit.

Every tier stores raw bits: an event read back from any tier is bit-identical to the one added.
"""

from __future__ import annotations

import torch

from memalign.memory.buffers import TokenBuffer
from memalign.memory.store_config import OffloadError, StoreClosedError, StoreConfig
from memalign.memory.tiers import EventCache, PagedArchive

__all__ = ["EventStore", "OffloadError", "StoreClosedError", "StoreConfig"]

_HOST = torch.device("cpu")
# The representative matrix only grows (one row per event, for the life of the store) and is never spilled:
# grown by 1/8 it holds at most 12.5 % unused rows (x1.5 left up to 50 %, in steps of a third of the matrix
# that showed in host memory growth per token), for 8 row copies per event instead of 2 -- a few MB per
# layer at 64k tokens, nothing next to the attention that produced the event.
_REPR_GROWTH = 0.125


class EventStore:
    """The episodic events of one attention layer of one sequence.

    ``config`` (default: everything in memory on ``device``) chooses the tiers. ``cache_on_host``
    keeps the event LRU even when ``device`` is the CPU, where it is normally pointless (host memory is
    the device); it exists so the cache logic can be exercised and measured without an accelerator.
    """

    def __init__(
        self,
        num_kv_heads: int,
        head_dim: int,
        repr_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        config: StoreConfig | None = None,
        *,
        cache_on_host: bool = False,
    ) -> None:
        cfg = config if config is not None else StoreConfig()
        self.config = cfg
        self.num_kv_heads, self.head_dim, self.repr_dim, self.dtype = num_kv_heads, head_dim, repr_dim, dtype
        self.device = torch.device(device)
        use_cache = cfg.device_cache_tokens is not None and (self.device.type != "cpu" or cache_on_host)
        archive_device = _HOST if use_cache else self.device
        pin = cfg.pin_memory if cfg.pin_memory is not None else self.device.type == "cuda"
        pin = bool(pin and archive_device.type == "cpu" and torch.cuda.is_available())
        self._pin = pin
        # Token-major [token, (k|v), kv_head, head_dim]: one event's K and V are one contiguous range.
        self.archive = PagedArchive(
            (2, num_kv_heads, head_dim),
            dtype,
            archive_device,
            cfg.page_tokens,
            cfg.host_budget_bytes,
            cfg.offload_dir,
            pin,
        )
        self.cache = EventCache(cfg.device_cache_tokens) if use_cache else None
        self._stream = torch.cuda.Stream(self.device) if use_cache and self.device.type == "cuda" else None
        self.reprs = TokenBuffer(1, (repr_dim,), dtype, self.device, growth=_REPR_GROWTH)
        self._size_list: list[int] = []
        self._sizes = TokenBuffer(1, (), torch.long, _HOST)  # synced from _size_list in bulk, on demand
        self.starts: list[int] = []  # archive offset of each event
        self.positions: list[int] = []  # absolute position of each event's first token
        self._closed = False

    # ---- sizes --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.starts)

    @property
    def num_tokens(self) -> int:
        return self.archive.num_tokens

    @property
    def sizes(self) -> torch.Tensor:
        """[events] token count of each event (int64, host)."""
        missing = len(self._size_list) - len(self._sizes)
        if missing > 0:  # one append per retrieval instead of one tensor op per added event
            self._sizes.append(torch.tensor(self._size_list[-missing:], dtype=torch.long).reshape(1, -1))
        return self._sizes.view()[0]

    def event_span(self, event_id: int) -> tuple[int, int]:
        """Archive token range [start, stop) of one event."""
        if not 0 <= event_id < len(self.starts):
            raise IndexError(f"event {event_id} out of range for a store of {len(self.starts)} events")
        start = self.starts[event_id]
        return start, start + self._size_list[event_id]

    def event_tier(self, event_id: int) -> str:
        """Where the event's K/V are read from next: "device" (cached/resident), "host" or "disk"."""
        start, stop = self.event_span(event_id)
        if self.cache is not None and event_id in self.cache:
            return "host" if self.device.type == "cpu" else "device"
        if self.archive.is_on_disk(start) or self.archive.is_on_disk(max(start, stop - 1)):
            return "disk"
        return "host" if self.archive.device.type == "cpu" else "device"

    # ---- writing ------------------------------------------------------------------------------------
    def reserve(self, n_tokens: int) -> None:
        """Make room for an event of ``n_tokens`` now (spilling to disk if needed), so a following
        :meth:`add` of that size cannot fail on the disk. Call it on every layer *before* popping the
        tokens from the window: an :class:`OffloadError` then leaves every layer untouched."""
        self._check_open()
        # Worst case for the representative rows: one event per token.
        self.archive.reserve(n_tokens, self._budget_shared_bytes(n_tokens))

    def add(self, keys: torch.Tensor, values: torch.Tensor, representative: torch.Tensor, position: int) -> None:
        """Store one event: keys/values [Hkv, n, D] (unrotated), representative [heads*D].

        Atomic: if a tier refuses the event (:class:`OffloadError`), nothing of it is stored and every
        earlier event is still served.
        """
        self._check_open()
        start = self.archive.num_tokens
        self.archive.reserve(keys.shape[1], self._budget_shared_bytes(1))
        self.archive.append(torch.stack([keys, values]).permute(2, 0, 1, 3))
        try:
            self._append_repr(representative.reshape(1, 1, -1))
        except BaseException:
            self.archive.truncate(start)
            raise
        self._size_list.append(keys.shape[1])
        self.starts.append(start)
        self.positions.append(position)

    def _budget_shared_bytes(self, new_events: int) -> int:
        """Bytes of the in-memory K/V budget taken by the representative matrix after ``new_events`` more
        rows: it counts when it lives in the same memory as the archive (a CPU model, or a host tier
        past ``repr_device_max_bytes``). It is never spilled -- every retrieval scores all of it."""
        if self.reprs.device != self.archive.device:
            return 0
        return self.reprs.nbytes_after_append(new_events) + self._sizes.nbytes()

    def _append_repr(self, row: torch.Tensor) -> None:
        limit = self.config.repr_device_max_bytes
        if limit is not None and self.reprs.device.type != "cpu" and self.reprs.nbytes_after_append(1) > limit:
            # Past the threshold the matrix lives on the host for good; scoring runs there.
            rows = max(256, int(len(self.reprs) * (1 + _REPR_GROWTH)) + 1)
            moved = TokenBuffer(1, (self.repr_dim,), self.dtype, _HOST, capacity=rows, growth=_REPR_GROWTH)
            moved.append(self.reprs.view().cpu())
            self.reprs = moved
        self.reprs.append(row.to(self.reprs.device))

    # ---- retrieval ----------------------------------------------------------------------------------
    def repr_matrix(self) -> torch.Tensor:
        """[events, heads*D] representative vectors (contiguous; on the device, or the host past
        ``repr_device_max_bytes`` -- use :meth:`scores` to be independent of where it lives)."""
        self._check_open()
        return self.reprs.view()[0]

    def scores(self, query: torch.Tensor) -> torch.Tensor:
        """[events] float32 similarity of each representative vector to ``query`` [heads*D], computed
        where the matrix lives and returned on ``query``'s device."""
        matrix = self.repr_matrix()
        return (matrix.float() @ query.to(matrix.device, torch.float32)).to(query.device)

    def gather(self, event_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V [Hkv, n, D] of the given events, in the given order, on the store's device (fresh tensors)."""
        self._check_open()
        if not event_ids:
            empty = torch.empty(self.num_kv_heads, 0, self.head_dim, dtype=self.dtype, device=self.device)
            return empty, empty
        pieces = self._gather_cached(event_ids) if self.cache is not None else self._gather_direct(event_ids)
        flat = pieces[0] if len(pieces) == 1 else torch.cat(pieces, 0)
        # [n, 2, Hkv, D] -> [2, Hkv, n, D]; clone: never alias the archive or the cache.
        out = flat.permute(1, 2, 0, 3).clone(memory_format=torch.contiguous_format)
        return out[0], out[1]

    def _gather_direct(self, event_ids: list[int]) -> list[torch.Tensor]:
        """Views of the archive, adjacent events merged into one range; disk pieces moved to the device."""
        pieces: list[torch.Tensor] = []
        run_start, run_stop, last = -1, -1, -2
        for eid in event_ids:
            start, stop = self.event_span(eid)
            if eid == last + 1:
                run_stop = stop
            else:
                if run_start >= 0:
                    pieces.extend(self.archive.read(run_start, run_stop))
                run_start, run_stop = start, stop
            last = eid
        pieces.extend(self.archive.read(run_start, run_stop))
        return [p if p.device == self.device else p.to(self.device) for p in pieces]

    def _gather_cached(self, event_ids: list[int]) -> list[torch.Tensor]:
        """Per event: the cached device copy, else a copy from host/disk that enters the cache."""
        assert self.cache is not None
        found = {eid: self.cache.get(eid) for eid in dict.fromkeys(event_ids)}  # marks hits recently used
        for eid, data in found.items():
            if data is None:
                found[eid] = data = self._fetch(eid)
                self.cache.put(eid, data)
        return [found[eid] for eid in event_ids]

    def _fetch(self, event_id: int, non_blocking: bool = True) -> torch.Tensor:
        """A fresh device copy [n, 2, Hkv, D] of one event from the host or disk tier."""
        pieces = self.archive.read(*self.event_span(event_id))
        src = pieces[0] if len(pieces) == 1 else torch.cat(pieces, 0)
        if self.device.type == "cuda":
            if self._pin and not src.is_pinned():
                src = src.pin_memory()  # a disk page or a crossing event: stage it so the copy stays async
            return src.to(self.device, non_blocking=non_blocking)
        return src.to(self.device, copy=True)

    def prefetch(self, event_ids: list[int]) -> None:
        """Start copying these events into the device cache, so a later :meth:`gather` of them finds them.

        On CUDA the copies run on a side stream and the gather's stream waits on them on the device (no
        host sync): call it as soon as the next retrieval is known (e.g. right after scoring, before the
        local attention). Without a device cache (CPU model, or the single-tier default) it does nothing:
        the archive is already where the gather reads it.
        """
        self._check_open()
        if self.cache is None:
            return
        missing = [eid for eid in dict.fromkeys(event_ids) if eid not in self.cache]
        if not missing:
            return
        if self._stream is None:
            for eid in missing:
                self.cache.put(eid, self._fetch(eid))
            return
        with torch.cuda.stream(self._stream):
            copies = [(eid, self._fetch(eid)) for eid in missing]
            ready = torch.cuda.Event()
            ready.record(self._stream)
        for eid, data in copies:
            self.cache.put(eid, data, ready=ready)

    # ---- introspection ------------------------------------------------------------------------------
    def tier_bytes(self, kv_only: bool = False) -> dict[str, int]:
        """Bytes held per physical tier: ``{"device", "host", "disk"}`` (allocated, not just used).

        "device" is the accelerator (always 0 for a CPU model, whose memory counts as "host"). With
        ``kv_only`` only event K/V count (the archive pages and the device cache); otherwise the
        representative matrix and the size index are included too.
        """
        out = {"device": 0, "host": 0, "disk": self.archive.disk_bytes()}

        def add(device: torch.device, nbytes: int) -> None:
            out["host" if device.type == "cpu" else "device"] += nbytes

        add(self.archive.device, self.archive.memory_bytes())
        if self.cache is not None:
            add(self.device, self.cache.nbytes())
        if not kv_only and not self._closed:
            add(self.reprs.device, self.reprs.nbytes())
            add(_HOST, self._sizes.nbytes())
        return out

    def nbytes(self) -> int:
        """Bytes held in memory (device + host, everything); disk pages not included."""
        tiers = self.tier_bytes()
        return tiers["device"] + tiers["host"]

    # ---- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Release memory and delete the spill files now (idempotent). The store is unusable after."""
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            self._stream.synchronize()
        if self.cache is not None:
            self.cache.clear()
        self.archive.close()
        self.reprs = TokenBuffer(1, (self.repr_dim,), self.dtype, self.device, capacity=0)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("this event store was closed; create a new memory cache for a new sequence")

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
