"""End to end: the disk tier changes where event K/V live, never the model's outputs, and cleans up."""

from __future__ import annotations

import os

import torch

from memalign.memory import EMConfig, EpisodicMemory
from memalign.memory.store_config import StoreConfig
from memalign.testing import tiny_model


def test_disk_tier_generates_identically_and_removes_its_files(tmp_path):
    model = tiny_model("qwen3")
    ids = torch.randint(3, 500, (1, 400), generator=torch.Generator().manual_seed(0))
    base = EMConfig(n_init=4, n_local=32, n_mem=32, chunk_size=16, min_block_size=2, max_block_size=8)
    with EpisodicMemory(model, base) as mem:
        expected = mem.generate(ids, max_new_tokens=8)
    # two pages of 16 tokens per store in memory, the rest spilled under tmp_path
    page_bytes = 16 * 2 * 2 * 32 * 4  # tokens x (k,v) x kv heads x head_dim x fp32
    tiered = base.replace(store=StoreConfig(host_budget_bytes=2 * page_bytes * 2, offload_dir=tmp_path, page_tokens=16))
    with EpisodicMemory(model, tiered) as mem:
        cache = mem.new_cache()
        got = mem.generate(ids, max_new_tokens=8, cache=cache)
        tiers = cache.sequences[0].layers[0].store.tier_bytes()
        assert tiers["disk"] > 0, "the budget forces spilling"
        assert any(tmp_path.iterdir())
    assert torch.equal(got, expected)
    assert not any(os.scandir(tmp_path)), "detach removes the spill directories"
