"""With n_local >= sequence length nothing is evicted: memory attention must equal the unmodified model,
for every architecture and any chunking; detaching restores the model exactly."""

from __future__ import annotations

import pytest
import torch

from memalign.memory import EMConfig, EpisodicMemory
from memalign.testing import TINY_KINDS, tiny_model

SEQ = 48


def _config(chunk: int) -> EMConfig:
    return EMConfig(n_init=4, n_local=64, n_mem=16, chunk_size=chunk, min_block_size=2, max_block_size=8)


def _logit_tol(ref: torch.Tensor) -> float:
    # fp32 with the attention split into LSE-merged parts: rounding only, relative to the logit scale.
    return 2e-5 * max(1.0, float(ref.abs().max()))


@pytest.fixture(scope="module", params=TINY_KINDS)
def model(request):
    return tiny_model(request.param)


@pytest.mark.parametrize("chunk", [SEQ, 7, 16])
def test_logits_match_unmodified_model(model, chunk):
    ids = torch.randint(3, 500, (1, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids).logits
        with EpisodicMemory(model, _config(min(chunk, 64))) as mem:
            cache = mem.new_cache()
            got = torch.cat(
                [model(ids[:, a : a + chunk], past_key_values=cache).logits for a in range(0, SEQ, chunk)], dim=1
            )
        after = model(ids).logits
    assert (got - ref).abs().max() <= _logit_tol(ref)
    assert torch.equal(after, ref), "detach must restore the model bit for bit"


def test_greedy_generation_matches(model):
    ids = torch.randint(3, 500, (1, 20), generator=torch.Generator().manual_seed(2))
    ref = model.generate(ids, max_new_tokens=12, do_sample=False)
    with EpisodicMemory(model, _config(8)) as mem:
        # transformers' generate (chunked prefill set by the memory) and memalign's own driver
        via_generate = model.generate(ids, max_new_tokens=12, do_sample=False)
        via_driver = mem.generate(ids, max_new_tokens=12)
    assert torch.equal(via_generate, ref)
    assert torch.equal(via_driver, ref[:, ids.shape[1] :])


def test_gemma3_sliding_layers_evict_but_match():
    """The tiny Gemma3's sliding window (16) is shorter than the input: its sliding layers really drop tokens."""
    model = tiny_model("gemma3_text")
    ids = torch.randint(3, 500, (1, SEQ), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(ids).logits
        with EpisodicMemory(model, _config(8)) as mem:
            cache = mem.new_cache()
            got = torch.cat([model(ids[:, a : a + 8], past_key_values=cache).logits for a in range(0, SEQ, 8)], 1)
            sliding = [r for r in cache.stats() if r["layer"] < 5]
    assert all(r["tokens_in_window"] < SEQ for r in sliding)
    assert (got - ref).abs().max() <= _logit_tol(ref)


def test_bf16_parity_within_bf16_noise():
    model = tiny_model("qwen3", dtype=torch.bfloat16)
    ids = torch.randint(3, 500, (1, 32), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = model(ids).logits.float()
        with EpisodicMemory(model, _config(8)) as mem:
            cache = mem.new_cache()
            got = torch.cat([model(ids[:, a : a + 8], past_key_values=cache).logits for a in range(0, 32, 8)], 1)
    # bf16 has 8 mantissa bits; splitting the softmax changes rounding, not results.
    assert (got.float() - ref).abs().max() <= 0.05 * max(1.0, float(ref.abs().max()))
    assert (got.float().argmax(-1) == ref.argmax(-1)).float().mean() > 0.95


def test_multi_turn_on_one_cache_matches_full_context():
    model = tiny_model("llama")
    turn1 = torch.randint(3, 500, (1, 10), generator=torch.Generator().manual_seed(5))
    turn2 = torch.randint(3, 500, (1, 6), generator=torch.Generator().manual_seed(6))
    with EpisodicMemory(model, _config(8)) as mem:
        cache = mem.new_cache()
        answer1 = mem.generate(turn1, max_new_tokens=5, cache=cache)
        answer2 = mem.generate(turn2, max_new_tokens=5, cache=cache)
    full = torch.cat([turn1, answer1, turn2], dim=1)
    ref = model.generate(full, max_new_tokens=5, do_sample=False)[:, full.shape[1] :]
    assert torch.equal(answer2, ref)


def test_two_caches_alternating_do_not_interfere():
    model = tiny_model("qwen3")
    cfg = EMConfig(n_init=2, n_local=16, n_mem=16, chunk_size=8, min_block_size=2, max_block_size=8)
    a = torch.randint(3, 500, (1, 64), generator=torch.Generator().manual_seed(7))
    b = torch.randint(3, 500, (1, 64), generator=torch.Generator().manual_seed(8))
    with torch.no_grad(), EpisodicMemory(model, cfg) as mem:
        alone_a = torch.cat(
            [
                model(a[:, i : i + 8], past_key_values=(c := mem.new_cache()) if i == 0 else c).logits
                for i in range(0, 64, 8)
            ],
            1,
        )
        cache_a, cache_b = mem.new_cache(), mem.new_cache()
        mixed_a = []
        for i in range(0, 64, 8):
            mixed_a.append(model(a[:, i : i + 8], past_key_values=cache_a).logits)
            model(b[:, i : i + 8], past_key_values=cache_b)
    assert torch.equal(torch.cat(mixed_a, 1), alone_a)


def test_attach_twice_is_refused_and_detach_is_idempotent():
    from memalign.errors import ConfigError

    model = tiny_model("qwen2")
    with EpisodicMemory(model, _config(8)) as mem:
        with pytest.raises(ConfigError, match="already attached"):
            EpisodicMemory(model, _config(8)).attach()
        mem.detach()
        mem.detach()
    assert model.config._attn_implementation == "sdpa"


def test_forward_longer_than_window_is_refused():
    from memalign.errors import ConfigError

    model = tiny_model("qwen3")
    cfg = EMConfig(n_init=2, n_local=16, n_mem=16, chunk_size=8, min_block_size=2, max_block_size=8)
    with EpisodicMemory(model, cfg), pytest.raises(ConfigError, match="exceeds n_local"):
        model(torch.randint(3, 500, (1, 40)))
