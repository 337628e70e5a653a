"""Tiered event store at scale: fill time, bytes per tier and gather throughput of a whole model's stores.

A qwen-0.5B-shaped model by default: 24 memory layers, 2 KV heads x 64 dims, 14 query heads (the
representative vectors are 14 x 64), bf16, events of 32-128 tokens (mean ~80), a model-wide host budget
of 1 GiB split evenly over the layers; everything past it is spilled to one file per store.

``device_MiB``/``host_MiB`` count everything a tier holds (K/V pages, device cache, representative
vectors); the ``kv_`` columns only event K/V, the part bounded by the cache and the host budget.
``rss_anon_MiB`` is the process's anonymous resident memory after the fill (the baseline before any
store exists is printed in the header); spilled pages are read with ``pread`` and never stay mapped.

Each gather mimics one retrieval of one layer: random events (sorted, as the retrieval returns them)
up to ``--n-mem`` tokens. Patterns: ``recent`` draws from the newest events (the host tier),
``uniform`` from all of them (mostly the disk tier at scale); ``uniform-cold`` does the same after
dropping the spill files from the OS page cache (fsync + POSIX_FADV_DONTNEED), i.e. real disk reads.

    python benchmarks/store_bench.py --tokens 100000 1000000
    python benchmarks/store_bench.py --tokens 1000000 --device cuda --device-cache-tokens 4096
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch

from memalign.memory.store import EventStore
from memalign.memory.store_config import StoreConfig

MiB = 2**20
POOL = 61  # distinct random event payloads (prime, so neighbours differ); event e reuses payload e % POOL


def rss_anon_bytes() -> int:
    """Anonymous resident memory (what the host budget bounds)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def drop_page_cache(stores: list[EventStore]) -> None:
    """Flush the spill files and evict them from the page cache, so the next reads hit the disk."""
    for store in stores:
        directory = store.archive.directory
        if directory is None:
            continue
        for path in directory.iterdir():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.cpu().contiguous().view({2: torch.int16, 4: torch.int32}[x.element_size()])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick_events(rng: random.Random, sizes: list[int], lo: int, budget: int) -> list[int]:
    """Random distinct events from ``[lo, len(sizes))`` while they fit ``budget`` tokens, sorted."""
    chosen, used, tries = set(), 0, 0
    while tries < 4 * budget:
        tries += 1
        eid = rng.randrange(lo, len(sizes))
        if eid in chosen:
            continue
        if used + sizes[eid] > budget:
            break
        chosen.add(eid)
        used += sizes[eid]
    return sorted(chosen)


def run(n_tokens: int, args: argparse.Namespace, offload_root: Path) -> list[dict[str, object]]:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    budget = int(args.host_budget_gib * 2**30)
    config = StoreConfig(
        device_cache_tokens=args.device_cache_tokens,
        host_budget_bytes=budget,
        offload_dir=offload_root,
        page_tokens=args.page_tokens,
    ).per_store(args.layers)
    gen = torch.Generator().manual_seed(0)
    pool_k = torch.randn(POOL, args.kv_heads, args.max_event, args.head_dim, generator=gen).to(dtype).to(device)
    pool_v = torch.randn(POOL, args.kv_heads, args.max_event, args.head_dim, generator=gen).to(dtype).to(device)
    pool_r = torch.randn(POOL, args.heads * args.head_dim, generator=gen).to(dtype).to(device)
    rng = random.Random(0)
    sizes: list[int] = []
    while sum(sizes) < n_tokens:
        sizes.append(rng.randint(args.min_event, args.max_event))
    sizes[-1] -= sum(sizes) - n_tokens

    stores = [
        EventStore(args.kv_heads, args.head_dim, args.heads * args.head_dim, dtype, device, config)
        for _ in range(args.layers)
    ]
    t0 = time.perf_counter()
    position = 0
    for eid, size in enumerate(sizes):  # layer-inner, as eviction adds one event to every layer
        p = eid % POOL
        k, v, r = pool_k[p, :, :size], pool_v[p, :, :size], pool_r[p]
        for store in stores:
            store.add(k, v, r, position)
        position += size
    sync(device)
    fill_s = time.perf_counter() - t0
    rss_fill = rss_anon_bytes()

    tiers = {"device": 0, "host": 0, "disk": 0}
    for store in stores:
        for name, value in store.tier_bytes().items():
            tiers[name] += value
    kv = {"device": 0, "host": 0, "disk": 0}
    for store in stores:
        for name, value in store.tier_bytes(kv_only=True).items():
            kv[name] += value
    first_in_memory = len(sizes) - 1  # the recent pattern draws from events that are not on disk
    while first_in_memory > 0 and stores[0].event_tier(first_in_memory - 1) != "disk":
        first_in_memory -= 1
    rows = []
    patterns = [("recent", first_in_memory), ("uniform", 0)]
    if args.cold:
        patterns.append(("uniform-cold", 0))
    for pattern, lo in patterns:
        if pattern == "uniform-cold":
            drop_page_cache(stores)
        picks = [[pick_events(rng, sizes, lo, args.n_mem) for _ in stores] for _ in range(args.rounds)]
        # one warm-up round (first mappings, allocator) not timed
        for store, ids in zip(stores, picks[0], strict=True):
            store.gather(ids)
        sync(device)
        gathered = 0
        t0 = time.perf_counter()
        for round_ids in picks[1:]:
            for store, ids in zip(stores, round_ids, strict=True):
                k, _ = store.gather(ids)
                gathered += k.shape[1]
        sync(device)
        elapsed = time.perf_counter() - t0
        n_gathers = (args.rounds - 1) * args.layers
        per_token = 2 * args.kv_heads * args.head_dim * pool_k.element_size()
        rows.append(
            {
                "tokens": n_tokens,
                "events/layer": len(sizes),
                "fill_s": fill_s,
                "device_MiB": tiers["device"] / MiB,
                "kv_device_MiB": kv["device"] / MiB,
                "host_MiB": tiers["host"] / MiB,
                "kv_host_MiB": kv["host"] / MiB,
                "disk_MiB": tiers["disk"] / MiB,
                "rss_anon_MiB": rss_fill / MiB,
                "pattern": pattern,
                "ms/gather": 1e3 * elapsed / n_gathers,
                "tok/gather": gathered / n_gathers,
                "Mtok/s": gathered / elapsed / 1e6,
                "GB/s": gathered * per_token / elapsed / 1e9,
            }
        )

    # spot-check: gathered K/V are bit-identical to what was added, whatever tier they came from
    for eid in (0, len(sizes) // 2, len(sizes) - 1):
        k, v = stores[-1].gather([eid])
        p = eid % POOL
        assert torch.equal(bits(k), bits(pool_k[p, :, : sizes[eid]])), eid
        assert torch.equal(bits(v), bits(pool_v[p, :, : sizes[eid]])), eid
    for store in stores:
        store.close()
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    headers = list(rows[0])
    cells = [[f"{r[h]:.2f}" if isinstance(r[h], float) else str(r[h]) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for c in cells:
        print("  ".join(x.rjust(w) for x, w in zip(c, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--heads", type=int, default=14)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--min-event", type=int, default=32)
    parser.add_argument("--max-event", type=int, default=128)
    parser.add_argument("--n-mem", type=int, default=2048, help="tokens per gather (one retrieval)")
    parser.add_argument("--rounds", type=int, default=11, help="gathers per layer and pattern (first is warm-up)")
    parser.add_argument("--host-budget-gib", type=float, default=1.0, help="model-wide, split over the layers")
    parser.add_argument("--page-tokens", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--device-cache-tokens",
        type=int,
        default=None,
        help="accelerator LRU per layer (ignored on cpu, where host memory is the device)",
    )
    parser.add_argument("--offload-dir", type=Path, default=None)
    parser.add_argument("--cold", action="store_true", help="also measure gathers after dropping the page cache")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (gathers are small copies: 1 avoids thread hand-off noise)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.offload_dir))
    try:
        print(
            f"# {args.layers} layers x {args.kv_heads} kv heads x {args.head_dim} dims, {args.dtype}, "
            f"host budget {args.host_budget_gib} GiB, pages of {args.page_tokens} tokens, n_mem {args.n_mem}, "
            f"device {args.device}, torch threads {torch.get_num_threads()}, "
            f"baseline RssAnon {rss_anon_bytes() / MiB:.0f} MiB"
        )
        rows = []
        for n in args.tokens:
            rows.extend(run(n, args, root))
            print_table(rows)
            print()
        leftovers = list(root.iterdir())
        print(f"# spill directories left after close: {len(leftovers)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
