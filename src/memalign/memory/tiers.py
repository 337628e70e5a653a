"""Storage tiers of event K/V: a paged in-memory archive that spills its oldest pages to disk, and an
accelerator LRU of whole events.

Why pages: events are consecutive runs of tokens, so one append-only, token-major archive holds them
all; cutting it into fixed-size pages gives a host budget with a fine grain and lets the oldest tokens
leave memory without moving the rest (no compaction, no doubling copy of a multi-GB buffer).
Token-major ``[token, (k|v), kv_head, head_dim]`` keeps one event's K *and* V in one contiguous byte
range: one DMA to the accelerator, one contiguous read from disk.

Spilled pages are written as raw bytes (bf16 included, never converted) at their page offset in one
spill file per archive, and read back with ``pread`` into fresh tensors. Why not memory mapping: pages
touched through a mapping count in the process's resident memory for as long as the mapping lives, so
a disk tier read through mappings ends up resident again (measured: 2 GB spilled at 64k tokens, peak
RSS unchanged). A read costs the bytes it copies, and the OS page cache -- not the process -- keeps
hot pages. One file per archive (not per page) keeps the number of files and open descriptors flat
at millions of tokens; descriptors come from a small process-wide pool.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import torch

from memalign.errors import ConfigError, OffloadError
from memalign.memory import spill

# Open spill-file descriptors kept process-wide (LRU). One file per archive (one per layer and
# sequence); past the cap the least recently read file is closed and reopened on its next read.
MAX_OPEN_SPILL_FILES = 256
_MIN_PAGE_ALLOC = 256  # first allocation of the first page, in tokens (short inputs do not pay a full page)


def write_at(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at byte ``offset`` of the open file ``fd``.

    A module-level function so tests can simulate a full disk by replacing it.
    """
    view = data.cast("B")
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class _SpillFiles:
    """A process-wide LRU of open spill-file descriptors, bounded by :data:`MAX_OPEN_SPILL_FILES`."""

    def __init__(self) -> None:
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, create: bool = False) -> int:
        key = str(path)
        with self._lock:
            fd = self._fds.get(key)
            if fd is not None:
                self._fds.move_to_end(key)
                return fd
            fd = os.open(key, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
            self._fds[key] = fd
            while len(self._fds) > MAX_OPEN_SPILL_FILES:
                os.close(self._fds.popitem(last=False)[1])
            return fd

    def close(self, path: Path) -> None:
        with self._lock:
            fd = self._fds.pop(str(path), None)
        if fd is not None:
            os.close(fd)

    def __len__(self) -> int:
        return len(self._fds)


SPILL_FILES = _SpillFiles()


def _remove_spill(directory: str, path: Path) -> None:
    """Close the archive's descriptor and delete its spill directory (finalizer: close, GC, exit, signal)."""
    with suppress(OSError):
        SPILL_FILES.close(path)
    shutil.rmtree(directory, ignore_errors=True)
    spill.forget_dir(directory)


def _offload_message(directory: Path, error: OSError, action: str) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left in offload directory {str(directory)!r} while {action}: free disk space there, "
            "point StoreConfig.offload_dir at a larger disk, or raise StoreConfig.host_budget_bytes "
            "(None keeps all event K/V in memory)"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"offload directory {str(directory)!r} is not writable ({error.strerror}) while {action}: "
            "set StoreConfig.offload_dir to a writable directory, or raise StoreConfig.host_budget_bytes "
            "so nothing spills to disk"
        )
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return (
            f"offload directory {str(directory)!r} does not exist or is not a directory ({action}): "
            "create it or set StoreConfig.offload_dir to an existing, writable directory"
        )
    return (
        f"could not write event K/V to {str(directory)!r} while {action} ({error}): set "
        "StoreConfig.offload_dir to a working directory or raise StoreConfig.host_budget_bytes"
    )


class PagedArchive:
    """Append-only token archive ``[tokens, *token_shape]`` in pages of ``page_tokens`` tokens.

    Pages ``[0, spilled)`` are files on disk, the rest live in memory on ``device`` (host memory,
    pinned when ``pin``; or the model's device in the single-tier default). With ``budget_bytes`` set,
    at most ``budget_bytes // page_bytes`` pages stay in memory: before an append needs a new page the
    oldest full pages are written to disk. Spilling happens *before* anything is written, so a failure
    (full disk, unwritable directory) leaves the archive exactly as it was.
    """

    def __init__(
        self,
        token_shape: Sequence[int],
        dtype: torch.dtype,
        device: torch.device,
        page_tokens: int,
        budget_bytes: int | None = None,
        offload_dir: str | os.PathLike[str] | None = None,
        pin: bool = False,
    ) -> None:
        self.token_shape = tuple(int(s) for s in token_shape)
        self.dtype, self.device, self.page_tokens, self.pin = dtype, device, page_tokens, pin
        self.token_bytes = math.prod(self.token_shape) * torch.empty(0, dtype=dtype).element_size()
        self.page_bytes = page_tokens * self.token_bytes
        self.budget_bytes = budget_bytes
        self.max_memory_pages: int | None = None
        if budget_bytes is not None:
            self.max_memory_pages = budget_bytes // self.page_bytes
            if self.max_memory_pages < 2:
                raise ConfigError(
                    f"StoreConfig.host_budget_bytes={budget_bytes} per store holds fewer than two pages of "
                    f"{page_tokens} tokens ({self.page_bytes} bytes each for this layer); raise it to at least "
                    f"{2 * self.page_bytes} or lower StoreConfig.page_tokens"
                )
        self.offload_dir = Path(offload_dir) if offload_dir is not None else None
        if budget_bytes is not None:  # a disk tier: first clear what crashed processes left in its folder
            spill.remove_stale(self.offload_dir)
        self.num_tokens = 0
        self.spilled = 0  # pages [0, spilled) are on disk
        self._pages: list[torch.Tensor | None] = []  # None: on disk
        self._dir: Path | None = None
        self._finalizer: weakref.finalize | None = None

    # ---- sizes ---------------------------------------------------------------------------------------
    @property
    def directory(self) -> Path | None:
        """This archive's own spill directory (created on the first spill)."""
        return self._dir

    def memory_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self._pages[self.spilled :] if p is not None)

    def disk_bytes(self) -> int:
        return self.spilled * self.page_bytes

    # ---- writing ------------------------------------------------------------------------------------
    def memory_page_limit(self, shared_bytes: int = 0) -> int | None:
        """Pages allowed in memory when ``shared_bytes`` of the budget are used by something else (the
        store's representative vectors); ``None`` without a budget."""
        if self.budget_bytes is None:
            return None
        return max(0, (self.budget_bytes - shared_bytes) // self.page_bytes)

    def reserve(self, n: int, shared_bytes: int = 0) -> None:
        """Make room in memory for ``n`` more tokens, spilling the oldest full pages to disk if needed.

        ``shared_bytes`` of the budget are taken by other host data of the same store, so fewer pages
        stay in memory. Raises :class:`OffloadError` (nothing appended, every stored token still
        readable) when the disk refuses a page or when ``n`` tokens cannot fit the budget even with every
        older page spilled.
        """
        limit = self.memory_page_limit(shared_bytes)
        if limit is None or n <= 0:
            return
        P = self.page_tokens
        free = len(self._pages) * P - self.num_tokens
        new_pages = -(-max(0, n - free) // P)
        # Shared bytes shrink the allowance, but never below what this append itself needs in memory
        # (the partly filled page and the new ones): whether an event fits is the budget's call alone.
        assert self.max_memory_pages is not None
        limit = max(limit, min(self.max_memory_pages, new_pages + (1 if self.num_tokens % P else 0)))
        excess = len(self._pages) - self.spilled + new_pages - limit
        if excess <= 0:
            return
        spillable = self.num_tokens // P - self.spilled  # full pages still in memory
        if spillable < excess:
            raise OffloadError(
                f"an event of {n} tokens needs {new_pages} new page(s) of {P} tokens, more than the host budget "
                f"of {self.budget_bytes} bytes ({limit} pages) can hold: raise "
                "StoreConfig.host_budget_bytes or lower StoreConfig.page_tokens"
            )
        for _ in range(excess):
            self._spill_oldest()

    def append(self, x: torch.Tensor) -> None:
        """Append ``x`` [n, *token_shape] (any device). Atomic: on failure nothing is appended."""
        n = x.shape[0]
        if tuple(x.shape[1:]) != self.token_shape:
            raise ValueError(f"expected tokens of shape {self.token_shape}, got {tuple(x.shape[1:])}")
        self.reserve(n)
        start = self.num_tokens
        try:
            done = 0
            while done < n:
                page, offset = divmod(self.num_tokens, self.page_tokens)
                take = min(n - done, self.page_tokens - offset)
                buf = self._writable_page(page, offset + take)
                buf[offset : offset + take] = x[done : done + take]
                self.num_tokens += take
                done += take
        except BaseException:
            self.truncate(start)
            raise

    def truncate(self, n: int) -> None:
        """Forget tokens from ``n`` on (only tokens still in memory: used to undo a failed append)."""
        if n > self.num_tokens or n < self.spilled * self.page_tokens:
            raise ValueError(f"cannot truncate {self.num_tokens} tokens to {n}")
        self.num_tokens = n
        del self._pages[-(-n // self.page_tokens) :]

    def _writable_page(self, page: int, needed: int) -> torch.Tensor:
        """The in-memory page ``page`` with room for ``needed`` tokens.

        Only the first page grows geometrically (a short input should not pay a whole page per layer);
        later pages are allocated whole, once: an input that filled a page will likely fill the next,
        and growing every page by doubling left a trail of freed 1/16..1/2-page blocks per page and
        layer for the allocator to keep. Measured (``store_bench.py``, SmolLM2-shaped fp32 store, 32k ->
        64k tokens): anonymous RSS grew 53.8 kB per token before, 49.8 after (K/V 46.1 + vectors 4.9).
        """
        P = self.page_tokens
        if page == len(self._pages):
            first = max(needed, _MIN_PAGE_ALLOC) if page == 0 else P
            self._pages.append(self._alloc(min(P, first)))
        buf = self._pages[page]
        assert buf is not None, "only the newest page is written and it is never on disk"
        if buf.shape[0] < needed:
            grown = self._alloc(min(P, max(2 * buf.shape[0], needed)))
            filled = self.num_tokens - page * P
            grown[:filled] = buf[:filled]
            self._pages[page] = buf = grown
        return buf

    def _alloc(self, tokens: int) -> torch.Tensor:
        return torch.empty((tokens, *self.token_shape), dtype=self.dtype, device=self.device, pin_memory=self.pin)

    # ---- disk ---------------------------------------------------------------------------------------
    @property
    def spill_path(self) -> Path | None:
        """The spill file (page ``p`` at byte ``p * page_bytes``), once something was spilled."""
        return None if self._dir is None else self._dir / "pages.kv"

    def _ensure_dir(self) -> Path:
        if self._dir is None:
            parent = self.offload_dir if self.offload_dir is not None else Path(tempfile.gettempdir())
            try:
                path = spill.create_dir(parent)
            except OSError as e:
                raise OffloadError(_offload_message(parent, e, "creating the spill directory")) from e
            self._dir = path
            # Closes the file and removes the directory on close(), at garbage collection, at exit or on
            # SIGTERM/SIGINT (the spill module runs the finalizer).
            self._finalizer = weakref.finalize(self, _remove_spill, str(path), path / "pages.kv")
            spill.track_dir(path, self._finalizer)
        return self._dir

    def _spill_oldest(self) -> None:
        page = self.spilled
        data = self._pages[page]
        assert data is not None and data.shape[0] == self.page_tokens
        directory = self._ensure_dir()
        path = self.spill_path
        assert path is not None
        host = data if data.device.type == "cpu" else data.cpu()
        raw = host.contiguous().view(torch.uint8).reshape(-1).numpy()
        offset = page * self.page_bytes
        try:
            fd = SPILL_FILES.get(path, create=True)
            try:
                write_at(fd, memoryview(raw), offset)
            except OSError:
                with suppress(OSError):
                    os.ftruncate(fd, offset)  # no half-written page left behind
                raise
        except OSError as e:
            raise OffloadError(_offload_message(directory, e, f"spilling page {page} of event K/V")) from e
        self._pages[page] = None
        self.spilled += 1

    def _read_disk(self, page: int, offset: int, take: int) -> torch.Tensor:
        """Tokens [offset, offset + take) of spilled page ``page``, read into a fresh host tensor."""
        out = torch.empty((take, *self.token_shape), dtype=self.dtype)
        buf = memoryview(out.view(torch.uint8).reshape(-1).numpy())
        position = page * self.page_bytes + offset * self.token_bytes
        path = self.spill_path
        try:
            fd = SPILL_FILES.get(path)
            done = 0
            while done < len(buf):
                got = os.preadv(fd, [buf[done:]], position + done)
                if got == 0:
                    raise OSError(errno.EIO, "spill file is shorter than the pages written to it")
                done += got
        except OSError as e:
            raise OffloadError(
                f"cannot read spilled event K/V from {str(path)!r} ({e}); was the offload "
                "directory removed or truncated while the model was running?"
            ) from e
        return out

    # ---- reading ------------------------------------------------------------------------------------
    def read(self, start: int, stop: int) -> list[torch.Tensor]:
        """Tokens [start, stop) in order, one piece per page crossed: views of memory pages, fresh
        tensors for spilled pages.

        Memory views alias the archive: copy them before the archive changes (spills free memory pages).
        """
        if not 0 <= start <= stop <= self.num_tokens:
            raise IndexError(f"tokens [{start}, {stop}) outside the archive of {self.num_tokens}")
        pieces = []
        t = start
        while t < stop:
            page, offset = divmod(t, self.page_tokens)
            take = min(stop - t, self.page_tokens - offset)
            data = self._pages[page]
            pieces.append(data[offset : offset + take] if data is not None else self._read_disk(page, offset, take))
            t += take
        return pieces

    def is_on_disk(self, token: int) -> bool:
        return token // self.page_tokens < self.spilled

    def close(self) -> None:
        """Free memory pages, close and delete the spill file (idempotent)."""
        self._pages = []
        self.num_tokens = self.spilled = 0
        if self._finalizer is not None:
            self._finalizer()


class EventCache:
    """LRU of whole events' K/V ``[n, *token_shape]`` on the accelerator, bounded in tokens.

    Entries may be *pending*: copied on a side stream by a prefetch, with a CUDA event that the
    consumer's stream waits on (a device-side wait, the host never blocks) before first use.
    """

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity_tokens = capacity_tokens
        self.tokens = 0
        self._entries: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._ready: dict[int, torch.cuda.Event] = {}
        self.hits = self.misses = 0

    def __contains__(self, event_id: int) -> bool:
        return event_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def order(self) -> list[int]:
        """Cached event ids, least recently used first."""
        return list(self._entries)

    def get(self, event_id: int) -> torch.Tensor | None:
        """The cached K/V of ``event_id`` (marked most recently used), or None."""
        data = self._entries.get(event_id)
        if data is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(event_id)
        ready = self._ready.pop(event_id, None)
        if ready is not None:
            stream = torch.cuda.current_stream(data.device)
            stream.wait_event(ready)
            data.record_stream(stream)  # allocated on the side stream, now also used here
        return data

    def put(self, event_id: int, data: torch.Tensor, ready: torch.cuda.Event | None = None) -> None:
        """Insert as most recently used, evicting least recently used events to stay within capacity.

        An event larger than the whole cache is not kept (the caller still holds its copy).
        """
        n = data.shape[0]
        self.discard(event_id)
        if n > self.capacity_tokens:
            return
        while self.tokens + n > self.capacity_tokens:
            old, old_data = self._entries.popitem(last=False)
            self._ready.pop(old, None)
            self.tokens -= old_data.shape[0]
        self._entries[event_id] = data
        self.tokens += n
        if ready is not None:
            self._ready[event_id] = ready

    def discard(self, event_id: int) -> None:
        old = self._entries.pop(event_id, None)
        if old is not None:
            self._ready.pop(event_id, None)
            self.tokens -= old.shape[0]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._entries.values())

    def clear(self) -> None:
        self._entries.clear()
        self._ready.clear()
        self.tokens = 0
