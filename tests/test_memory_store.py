"""Tiered event store: bit-exact round trips device <-> host <-> disk, LRU order, host budget, gather
order across tiers, file lifecycle (close / exception / gc) and disk failures that leave the store whole.

All on CPU: ``cache_on_host=True`` keeps the event LRU on the CPU so its logic runs without a GPU.
"""

from __future__ import annotations

import errno
import gc
import os
from pathlib import Path

import pytest
import torch

from memalign.errors import ConfigError, MemalignError
from memalign.memory import tiers
from memalign.memory.store import EventStore
from memalign.memory.store_config import OffloadError, StoreClosedError, StoreConfig
from memalign.memory.tiers import EventCache, PagedArchive

HKV, D, REPR = 2, 8, 4 * 8
PAGE = 16  # tokens per page: small, so a few events cross pages and spill


def token_bytes(dtype: torch.dtype) -> int:
    return 2 * HKV * D * torch.empty(0, dtype=dtype).element_size()


def random_bits(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Arbitrary bit patterns (NaN payloads, -0.0, infinities, subnormals) so 'bit-exact' means bits."""
    int_dtype = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}[dtype]
    info = torch.iinfo(int_dtype)
    return torch.randint(info.min, info.max, shape, generator=gen, dtype=torch.int64).to(int_dtype).view(dtype)


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view({4: torch.int32, 2: torch.int16}[x.element_size()])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(bits(a), bits(b))


def make_events(n: int, dtype: torch.dtype, seed: int = 0, max_size: int = 23) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    events = []
    for _ in range(n):
        size = int(torch.randint(1, max_size + 1, (1,), generator=gen))
        k = random_bits((HKV, size, D), dtype, gen)
        v = random_bits((HKV, size, D), dtype, gen)
        r = torch.randn(REPR, generator=gen).to(dtype)
        events.append((k, v, r))
    return events


def fill(store: EventStore, events: list[tuple[torch.Tensor, ...]]) -> None:
    pos = 0
    for k, v, r in events:
        store.add(k, v, r, pos)
        pos += k.shape[1]


def expected(events: list[tuple[torch.Tensor, ...]], ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.cat([events[i][0] for i in ids], dim=1), torch.cat([events[i][1] for i in ids], dim=1))


def tiered(tmp_path: Path, dtype: torch.dtype, pages: int = 3, cache: int | None = 48, **kw: object) -> EventStore:
    config = StoreConfig(
        device_cache_tokens=cache,
        host_budget_bytes=pages * PAGE * token_bytes(dtype),
        offload_dir=tmp_path,
        page_tokens=PAGE,
        **kw,
    )
    return EventStore(HKV, D, REPR, dtype, torch.device("cpu"), config, cache_on_host=cache is not None)


def spill_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("memalign-kv-*"))


# ---- configuration ------------------------------------------------------------------------------------


def test_store_config_validates_and_splits(tmp_path):
    assert StoreConfig() == StoreConfig(None, None, None, None, 4096, None)
    for bad in (
        {"device_cache_tokens": -1},
        {"host_budget_bytes": 1.5},
        {"page_tokens": 0},
        {"pin_memory": "yes"},
        {"repr_device_max_bytes": True},
    ):
        with pytest.raises(ConfigError):
            StoreConfig(**bad)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        StoreConfig(offload_dir=a_file)
    split = StoreConfig(device_cache_tokens=4096, host_budget_bytes=2**30, repr_device_max_bytes=1000).per_store(24)
    assert split.host_budget_bytes == 2**30 // 24 and split.repr_device_max_bytes == 41
    assert split.device_cache_tokens == 4096
    with pytest.raises(ConfigError):
        StoreConfig().per_store(0)


def test_budget_below_two_pages_is_a_config_error(tmp_path):
    config = StoreConfig(host_budget_bytes=PAGE * token_bytes(torch.float32), page_tokens=PAGE, offload_dir=tmp_path)
    with pytest.raises(ConfigError, match="at least"):
        EventStore(HKV, D, REPR, torch.float32, torch.device("cpu"), config)


def test_default_store_is_single_tier_and_unchanged():
    events = make_events(30, torch.float32)
    store = EventStore(HKV, D, REPR, torch.float32, torch.device("cpu"))
    fill(store, events)
    assert store.cache is None and store.archive.spilled == 0
    tiers_now = store.tier_bytes()
    assert tiers_now["disk"] == 0 and tiers_now["device"] == 0 and tiers_now["host"] == store.nbytes() > 0
    assert len(store) == 30 and store.num_tokens == sum(e[0].shape[1] for e in events)
    assert store.sizes.tolist() == [e[0].shape[1] for e in events] and store.sizes.dtype == torch.long
    matrix = store.repr_matrix()
    assert matrix.shape == (30, REPR) and matrix.is_contiguous()
    assert same_bits(matrix, torch.stack([e[2] for e in events]))
    query = torch.randn(REPR)
    assert torch.equal(store.scores(query), matrix.float() @ query)
    ids = [5, 6, 7, 0, 29, 12]
    k, v = store.gather(ids)
    ek, ev = expected(events, ids)
    assert same_bits(k, ek) and same_bits(v, ev) and k.is_contiguous()
    empty_k, empty_v = store.gather([])
    assert empty_k.shape == (HKV, 0, D) and empty_v.shape == (HKV, 0, D)
    with pytest.raises(IndexError):
        store.gather([30])


# ---- bit-exact round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_every_tier_is_bit_exact(tmp_path, dtype):
    events = make_events(40, dtype, seed=1)
    store = tiered(tmp_path, dtype, cache=72)  # events have at most 23 tokens: any 3 fit
    fill(store, events)
    assert store.archive.spilled > 0, "the budget must force pages to disk"
    seen_tiers = set()
    for i in range(len(events)):
        seen_tiers.add(store.event_tier(i))
        k, v = store.gather([i])  # first read: from disk or host, enters the cache
        assert same_bits(k, events[i][0]) and same_bits(v, events[i][1]), f"event {i}"
        assert i in store.cache
        k2, v2 = store.gather([i])  # second read: from the cache
        assert same_bits(k2, events[i][0]) and same_bits(v2, events[i][1])
    assert {"disk", "host"} <= seen_tiers
    store.cache.clear()
    store.prefetch([3, 4, 39])  # the prefetch path fills the cache with the same bits
    assert store.cache.order() == [3, 4, 39]
    k, v = store.gather([39, 3, 4])
    ek, ev = expected(events, [39, 3, 4])
    assert same_bits(k, ek) and same_bits(v, ev)
    assert same_bits(store.repr_matrix(), torch.stack([e[2] for e in events]))


def test_gathered_tensors_never_alias_storage(tmp_path):
    events = make_events(12, torch.float32, seed=2)
    for store in (tiered(tmp_path, torch.float32, cache=None), tiered(tmp_path, torch.float32)):
        fill(store, events)
        k, v = store.gather([0])
        k.zero_()
        v.fill_(1.0)
        k, v = store.gather([0])
        assert same_bits(k, events[0][0]) and same_bits(v, events[0][1])
        one_k, _ = store.gather([len(events) - 1])  # also a single-token permute that looks contiguous
        one_k.zero_()
        assert same_bits(store.gather([len(events) - 1])[0], events[-1][0])


# ---- LRU -------------------------------------------------------------------------------------------


def test_event_cache_lru_order_and_bound():
    cache = EventCache(capacity_tokens=10)

    def entry(n: int) -> torch.Tensor:
        return torch.zeros(n, 2, HKV, D)

    cache.put(1, entry(3))
    cache.put(2, entry(3))
    cache.put(3, entry(3))
    assert cache.order() == [1, 2, 3] and cache.tokens == 9
    assert cache.get(1) is not None  # 1 becomes most recent
    assert cache.order() == [2, 3, 1]
    cache.put(4, entry(4))  # 9 + 4 > 10: evicts 2, the least recently used, and nothing more
    assert cache.order() == [3, 1, 4] and cache.tokens == 10
    cache.put(5, entry(5))  # evicts 3 then 1
    assert cache.order() == [4, 5] and cache.tokens == 9
    assert cache.get(2) is None and (cache.hits, cache.misses) == (1, 1)
    cache.put(6, entry(11))  # larger than the whole cache: not kept, nothing evicted
    assert cache.order() == [4, 5] and 6 not in cache
    cache.put(4, entry(2))  # re-insert replaces and refreshes
    assert cache.order() == [5, 4] and cache.tokens == 7
    assert cache.nbytes() == 7 * 2 * HKV * D * 4


def test_store_cache_evicts_least_recently_gathered(tmp_path):
    gen = torch.Generator().manual_seed(3)
    store = EventStore(
        HKV, D, REPR, torch.float32, torch.device("cpu"), StoreConfig(device_cache_tokens=30), cache_on_host=True
    )
    for i in range(8):
        store.add(
            random_bits((HKV, 10, D), torch.float32, gen),
            random_bits((HKV, 10, D), torch.float32, gen),
            torch.zeros(REPR),
            10 * i,
        )
    store.gather([0, 1, 2])
    assert store.cache.order() == [0, 1, 2]
    store.gather([1])
    assert store.cache.order() == [0, 2, 1]
    store.gather([5])  # evicts 0, the least recently used
    assert store.cache.order() == [2, 1, 5]
    store.gather([6, 1])  # hits are refreshed before misses evict: 2 goes, 1 stays
    assert store.cache.order() == [5, 1, 6]
    for ids in ([0, 1, 2, 3], [4, 5, 6, 7], [7, 0]):  # requests larger than the cache are still served
        k, _ = store.gather(ids)
        assert k.shape[1] == 10 * len(ids)
        assert store.cache.tokens <= 30
        assert store.tier_bytes(kv_only=True)["host"] - store.archive.memory_bytes() <= 30 * token_bytes(torch.float32)


# ---- host budget and disk spill --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_host_budget_respected_and_oldest_pages_spill(tmp_path, dtype):
    budget = 3 * PAGE * token_bytes(dtype)
    store = tiered(tmp_path, dtype, cache=None)
    events = make_events(80, dtype, seed=4)
    pos = 0
    for k, v, r in events:
        store.add(k, v, r, pos)
        pos += k.shape[1]
        kv = store.tier_bytes(kv_only=True)
        assert kv["host"] <= budget
        assert kv["host"] + kv["disk"] >= store.num_tokens * token_bytes(dtype)
    spilled = store.archive.spilled
    in_memory = -(-store.num_tokens // PAGE) - spilled  # the representative rows take part of the budget
    assert 1 <= in_memory <= 3 and spilled > 0
    files = sorted(p.name for p in store.archive.directory.iterdir())
    assert files == ["pages.kv"], "one spill file per store"
    assert store.archive.spill_path.stat().st_size == spilled * PAGE * token_bytes(dtype)
    assert store.tier_bytes()["disk"] == spilled * PAGE * token_bytes(dtype)
    for i in range(spilled):  # every disk page holds exactly the oldest tokens
        assert store.archive.is_on_disk(i * PAGE)
    first_host = [i for i in range(len(events)) if store.event_tier(i) == "host"][0]
    assert all(store.event_tier(i) == "disk" for i in range(first_host))


def test_gather_across_tiers_returns_requested_order(tmp_path):
    events = make_events(60, torch.bfloat16, seed=5)
    store = tiered(tmp_path, torch.bfloat16, pages=5 + 18, cache=40)  # repr matrix + size index: 18 pages
    fill(store, events)
    store.gather([58, 59])  # now cached
    tiers_of = {i: store.event_tier(i) for i in range(60)}
    disk = [i for i, t in tiers_of.items() if t == "disk"]
    host = [i for i, t in tiers_of.items() if t == "host" and i not in store.cache]
    assert len(disk) > 6 and len(host) >= 2 and tiers_of[58] == tiers_of[59] == "host" and 58 in store.cache
    ids = [59, disk[3], disk[4], disk[5], host[-1], 58, disk[0], host[0], disk[-1]]
    k, v = store.gather(ids)
    ek, ev = expected(events, ids)
    assert same_bits(k, ek) and same_bits(v, ev)
    direct = tiered(tmp_path, torch.bfloat16, cache=None)  # the no-cache path merges adjacent events
    fill(direct, events)
    k, v = direct.gather(ids + ids[:3])
    ek, ev = expected(events, ids + ids[:3])
    assert same_bits(k, ek) and same_bits(v, ev)
    assert len(tiers.SPILL_FILES) <= tiers.MAX_OPEN_SPILL_FILES


def test_spilled_reads_are_fresh_tensors_and_survive_a_closed_descriptor(tmp_path):
    """Disk reads are copies (nothing of the file stays mapped, so spilled K/V stay off the resident set)
    and a descriptor evicted from the process-wide pool is reopened on the next read."""
    events = make_events(40, torch.float32, seed=9)
    store = tiered(tmp_path, torch.float32, cache=None)
    fill(store, events)
    on_disk = [i for i in range(len(events)) if store.event_tier(i) == "disk"]
    assert on_disk
    piece = store.archive.read(*store.event_span(on_disk[0]))[0]
    assert piece.is_contiguous() and piece.untyped_storage().nbytes() == piece.numel() * piece.element_size()
    tiers.SPILL_FILES.close(store.archive.spill_path)  # as if the pool had evicted it
    k, v = store.gather(on_disk)
    ek, ev = expected(events, on_disk)
    assert same_bits(k, ek) and same_bits(v, ev)


def test_representative_vectors_count_against_the_host_budget(tmp_path):
    """On a CPU model the representative matrix shares the in-memory budget with the K/V pages, so the
    store's whole resident size (not just its K/V) stays within ``host_budget_bytes``."""
    budget = 6 * PAGE * token_bytes(torch.float32)
    config = StoreConfig(host_budget_bytes=budget, offload_dir=tmp_path, page_tokens=PAGE)
    repr_dim = 2 * PAGE * token_bytes(torch.float32) // (150 * 4)  # 150 float32 rows = 2 pages of K/V
    store = EventStore(HKV, D, repr_dim, torch.float32, torch.device("cpu"), config)
    gen = torch.Generator().manual_seed(10)
    events = []
    for i in range(150):
        k = random_bits((HKV, 3, D), torch.float32, gen)
        events.append(k)
        store.add(k, k, torch.randn(repr_dim, generator=gen), 3 * i)
        assert store.tier_bytes()["host"] <= budget
    assert store.archive.memory_bytes() < budget - 2 * PAGE * token_bytes(torch.float32)
    k, _ = store.gather(list(range(150)))
    assert same_bits(k, torch.cat(events, dim=1))
    assert store.archive.spilled > 0


def test_reserve_spills_ahead_so_add_cannot_fail(tmp_path, monkeypatch):
    events = make_events(30, torch.float32, seed=6)
    store = tiered(tmp_path, torch.float32, cache=None)
    fill(store, events)
    k = torch.zeros(HKV, PAGE, D)
    store.reserve(PAGE)
    monkeypatch.setattr(tiers, "write_at", _enospc)
    store.add(k, k, torch.zeros(REPR), 10**6)  # no spill needed any more
    assert len(store) == 31


def test_event_larger_than_budget_is_a_clear_error(tmp_path):
    store = tiered(tmp_path, torch.float32, pages=2, cache=None)
    big = torch.zeros(HKV, 3 * PAGE, D)
    with pytest.raises(OffloadError, match="host_budget_bytes"):
        store.add(big, big, torch.zeros(REPR), 0)
    assert len(store) == 0 and store.num_tokens == 0


def test_paged_archive_append_is_atomic(monkeypatch):
    archive = PagedArchive((2, HKV, D), torch.float32, torch.device("cpu"), PAGE)
    archive.append(torch.ones(20, 2, HKV, D))
    original = PagedArchive._writable_page
    calls = {"n": 0}

    def failing(self: PagedArchive, page: int, needed: int) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 2:  # the second page of a 30-token append
            raise MemoryError("simulated")
        return original(self, page, needed)

    monkeypatch.setattr(PagedArchive, "_writable_page", failing)
    with pytest.raises(MemoryError):
        archive.append(torch.full((30, 2, HKV, D), 2.0))
    assert archive.num_tokens == 20 and len(archive._pages) == 2
    assert torch.equal(torch.cat(archive.read(0, 20)), torch.ones(20, 2, HKV, D))


# ---- lifecycle ---------------------------------------------------------------------------------------------


def test_files_removed_on_close(tmp_path):
    store = tiered(tmp_path, torch.float32)
    fill(store, make_events(40, torch.float32))
    directory = store.archive.directory
    assert directory is not None and any(directory.iterdir())
    store.close()
    store.close()  # idempotent
    assert not directory.exists() and spill_dirs(tmp_path) == []
    assert store.tier_bytes() == {"device": 0, "host": 0, "disk": 0}
    with pytest.raises(StoreClosedError):
        store.gather([0])
    with pytest.raises(StoreClosedError):
        store.add(torch.zeros(HKV, 1, D), torch.zeros(HKV, 1, D), torch.zeros(REPR), 0)


def test_files_removed_on_exception(tmp_path):
    with pytest.raises(RuntimeError, match="mid-generation"), tiered(tmp_path, torch.float32) as store:
        fill(store, make_events(40, torch.float32))
        assert spill_dirs(tmp_path)
        raise RuntimeError("mid-generation failure")
    assert spill_dirs(tmp_path) == []


def test_files_removed_at_garbage_collection(tmp_path):
    store = tiered(tmp_path, torch.float32)
    fill(store, make_events(40, torch.float32))
    store.gather([0, 1, 2])  # leave the spill file open in the descriptor pool
    assert spill_dirs(tmp_path)
    del store
    gc.collect()
    assert spill_dirs(tmp_path) == []


def test_directory_created_only_on_first_spill(tmp_path):
    store = tiered(tmp_path, torch.float32, pages=50)
    fill(store, make_events(5, torch.float32))
    assert store.archive.directory is None and spill_dirs(tmp_path) == []


# ---- disk failures --------------------------------------------------------------------------------------------


def _enospc(fd: int, data: memoryview, offset: int) -> None:
    os.pwrite(fd, bytes(data)[: len(data) // 2], offset)  # a half-written page, then the disk is full
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_full_disk_is_a_clear_error_and_the_store_stays_whole(tmp_path, monkeypatch, dtype):
    events = make_events(120, dtype, seed=7)
    store = tiered(tmp_path, dtype)
    real_write = tiers.write_at
    writes = {"n": 0}

    def flaky(fd: int, data: memoryview, offset: int) -> None:
        writes["n"] += 1
        if writes["n"] > 2:
            _enospc(fd, data, offset)
        real_write(fd, data, offset)

    monkeypatch.setattr(tiers, "write_at", flaky)
    stored = 0
    with pytest.raises(OffloadError) as info:
        for i, (k, v, r) in enumerate(events):
            store.add(k, v, r, i)
            stored += 1
    error = info.value
    assert isinstance(error, MemalignError) and isinstance(error, OSError)
    message = str(error)
    assert str(store.archive.directory) in message and "no space left" in message
    assert "offload_dir" in message and "host_budget_bytes" in message
    # the failed event is not counted; everything before it is served bit-exactly
    assert len(store) == stored and store.num_tokens == sum(e[0].shape[1] for e in events[:stored])
    assert store.sizes.numel() == stored and store.repr_matrix().shape[0] == stored
    ids = list(range(stored))
    k, v = store.gather(ids)
    ek, ev = expected(events, ids)
    assert same_bits(k, ek) and same_bits(v, ev)
    assert store.archive.spill_path.stat().st_size == store.archive.disk_bytes(), "no half-written page left"
    assert store.archive.memory_bytes() <= 3 * PAGE * token_bytes(dtype)
    # once the disk has room again the store carries on from where it stopped
    monkeypatch.setattr(tiers, "write_at", real_write)
    for k_, v_, r_ in events[stored:]:
        store.add(k_, v_, r_, 0)
    k, v = store.gather(list(range(len(events))))
    ek, ev = expected(events, list(range(len(events))))
    assert same_bits(k, ek) and same_bits(v, ev)
    store.close()
    assert spill_dirs(tmp_path) == []


def test_unwritable_directory_is_a_clear_error(tmp_path, monkeypatch):
    events = make_events(40, torch.float32, seed=8)

    def denied(fd: int, data: memoryview, offset: int) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    store = tiered(tmp_path, torch.float32)
    monkeypatch.setattr(tiers, "write_at", denied)
    stored = 0
    with pytest.raises(OffloadError, match="not writable") as info:
        for k, v, r in events:
            store.add(k, v, r, 0)
            stored += 1
    assert "StoreConfig.offload_dir" in str(info.value)
    assert len(store) == stored > 0
    k, _ = store.gather(list(range(stored)))
    assert same_bits(k, expected(events, list(range(stored)))[0])


def test_offload_dir_that_is_not_a_directory(tmp_path):
    parent = tmp_path / "file"
    parent.write_text("x")
    config = StoreConfig(
        host_budget_bytes=2 * PAGE * token_bytes(torch.float32), page_tokens=PAGE, offload_dir=parent / "sub"
    )
    store = EventStore(HKV, D, REPR, torch.float32, torch.device("cpu"), config)
    events = make_events(40, torch.float32, seed=9)
    with pytest.raises(OffloadError, match=str(parent / "sub")):
        fill(store, events)
    assert len(store) > 0
    k, _ = store.gather(list(range(len(store))))
    assert same_bits(k, expected(events, list(range(len(store))))[0])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_is_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        config = StoreConfig(
            host_budget_bytes=2 * PAGE * token_bytes(torch.float32), page_tokens=PAGE, offload_dir=locked
        )
        store = EventStore(HKV, D, REPR, torch.float32, torch.device("cpu"), config)
        with pytest.raises(OffloadError, match="not writable"):
            fill(store, make_events(40, torch.float32))
    finally:
        locked.chmod(0o700)


# ---- integration: the attention path cannot tell a tiered store from the default one ------------------------


@pytest.mark.parametrize("cache_tokens", [None, 24])
def test_memory_attention_is_identical_with_a_tiered_store(tmp_path, cache_tokens):
    from memalign.memory import EMConfig
    from memalign.memory.attention import memory_attention
    from memalign.memory.rope import RopeTable
    from memalign.memory.state import LayerMemory, SequenceMemory

    cfg = EMConfig(
        n_init=2,
        n_local=12,
        n_mem=24,
        chunk_size=4,
        min_block_size=2,
        max_block_size=6,
        segmentation="uniform",
        contiguity_fraction=0.25,
    )
    heads, kv_heads, dim = 2, 1, 8
    cpu = torch.device("cpu")
    rope = RopeTable(_identity_rope, torch.float32, cpu)
    layers = [LayerMemory(heads, kv_heads, dim, cfg.n_local, cfg.n_init, True, torch.float32, cpu) for _ in range(2)]
    config = StoreConfig(
        device_cache_tokens=cache_tokens,
        host_budget_bytes=3 * PAGE * 2 * kv_heads * dim * 4,
        offload_dir=tmp_path,
        page_tokens=PAGE,
    )
    layers[1].store = EventStore(
        kv_heads, dim, heads * dim, torch.float32, cpu, config, cache_on_host=cache_tokens is not None
    )
    seqs = [
        SequenceMemory(config=cfg, layers=[layer], memory_layers=[0], hidden_size=4, dtype=torch.float32, device=cpu)
        for layer in layers
    ]
    gen = torch.Generator().manual_seed(11)
    for s in range(0, 300, cfg.chunk_size):
        k, v = torch.randn(1, 4, dim, generator=gen), torch.randn(1, 4, dim, generator=gen)
        q = torch.randn(1, heads, 4, dim, generator=gen)
        outs = []
        for layer, seq in zip(layers, seqs, strict=True):
            layer.append(k, v)
            outs.append(memory_attention(layer, q, s, scale=dim**-0.5, rope=rope, config=cfg))
            seq.record(None, torch.zeros(4, 4))
            seq.evict(None)
        assert torch.equal(outs[0], outs[1]), f"chunk at {s}"
        assert layers[0].last_retrieved == layers[1].last_retrieved
        if cache_tokens is not None:  # device-resident K/V bounded by the cache, however long the input
            assert layers[1].store.cache.tokens <= cache_tokens
    tiered_store = layers[1].store
    assert tiered_store.archive.spilled > 0 and len(tiered_store) == len(layers[0].store) > 40
    assert tiered_store.positions == layers[0].store.positions
    tiered_store.close()
    assert spill_dirs(tmp_path) == []


def _identity_rope(x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, positions.shape[-1], 8)
    return torch.ones(shape), torch.zeros(shape)
