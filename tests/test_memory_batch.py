"""Batch size > 1: independent memories per sequence, left padding handled, same as running each alone."""

from __future__ import annotations

import torch

from memalign.memory import EMConfig, EpisodicMemory
from memalign.testing import tiny_model

CFG = EMConfig(n_init=2, n_local=16, n_mem=16, chunk_size=8, min_block_size=2, max_block_size=8)


def test_batch_of_three_left_padded_equals_each_alone():
    model = tiny_model("qwen3")
    gen = torch.Generator().manual_seed(0)
    lengths = [70, 45, 58]
    seqs = [torch.randint(3, 500, (1, n), generator=gen) for n in lengths]
    width = max(lengths)
    batch = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, width - s.shape[1] :] = s[0]
        mask[i, width - s.shape[1] :] = 1
    with EpisodicMemory(model, CFG) as mem:
        alone = [mem.generate(s, max_new_tokens=6) for s in seqs]
        cache = mem.new_cache()
        together = mem.generate(batch, max_new_tokens=6, attention_mask=mask, cache=cache)
        stats = cache.stats()
    for i in range(3):
        assert torch.equal(together[i], alone[i][0]), f"sequence {i} differs when batched"
    # each sequence formed its own events from its own (unpadded) tokens
    events = {
        row["sequence"]: row["tokens_in_events"] + row["tokens_in_window"] + row["sink_tokens"]
        for row in stats
        if row["layer"] == 0
    }
    assert [events[i] for i in range(3)] == [n + 5 for n in lengths]


def test_batched_transformers_generate_with_left_padding():
    """transformers' generate chunks from the start: exact when padding is a multiple of the chunk size."""
    model = tiny_model("llama")
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randint(3, 500, (1, 40), generator=gen), torch.randint(3, 500, (1, 24), generator=gen)
    batch = torch.cat([a, torch.cat([torch.zeros(1, 16, dtype=torch.long), b], 1)])
    mask = torch.cat([torch.ones(1, 40), torch.cat([torch.zeros(1, 16), torch.ones(1, 24)], 1)]).long()
    with EpisodicMemory(model, CFG):
        together = model.generate(batch, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
        alone_a = model.generate(a, max_new_tokens=5, do_sample=False)
        alone_b = model.generate(b, max_new_tokens=5, do_sample=False)
    assert torch.equal(together[0, 40:], alone_a[0, 40:])
    assert torch.equal(together[1, 40:], alone_b[0, 24:])
