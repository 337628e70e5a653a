"""Unit tests of the EM-LLM pieces: thresholds, block cutting, boundary conventions, refinement,
retrieval/contiguity, config validation, and the exactly-once / memory-bound invariants."""

from __future__ import annotations

import pytest
import torch

from memalign.errors import ConfigError
from memalign.memory import EMConfig
from memalign.memory.attention import memory_attention
from memalign.memory.refinement import (
    conductance_scores,
    modularity_scores,
    refine_boundaries,
    refine_boundary,
)
from memalign.memory.retrieval import contiguity_neighbours, select_by_similarity, update_contiguity_buffer
from memalign.memory.rope import RopeTable
from memalign.memory.segmentation import cut_events, surprise_thresholds
from memalign.memory.state import LayerMemory, SequenceMemory

# ---- thresholds and cutting ------------------------------------------------------------------------


def test_thresholds_equal_naive_sliding_window():
    torch.manual_seed(0)
    history, new = torch.rand(30), torch.rand(25)
    window, gamma = 10, 1.3
    got = surprise_thresholds(history, new, window, gamma)
    values = torch.cat([history, new]).double()
    for i in range(new.numel()):
        prev = values[30 + i - window : 30 + i]
        expected = prev.mean() + gamma * prev.std()  # unbiased, as torch.std and the reference
        assert got[i].item() == pytest.approx(expected.item(), rel=1e-5)


def test_thresholds_need_two_values():
    got = surprise_thresholds(torch.empty(0), torch.tensor([5.0, 1.0, 2.0]), window=8, gamma=1.0)
    assert torch.isinf(got[:2]).all() and torch.isfinite(got[2])


def test_cut_events_reference_example():
    flags = [False] * 300
    for b in (3, 20, 25, 200):
        flags[b] = True
    assert cut_events(flags, min_size=8, max_size=128) == [20, 128, 52]  # 100 tokens keep waiting


def test_cut_events_min_merge_max_split_and_waiting_tail():
    flags = [False] * 40
    for b in (2, 30):
        flags[b] = True
    # segments 2,28,10: the short one merges forward into 30 -> split 16+14; the last 10 wait
    assert cut_events(flags, min_size=4, max_size=16) == [16, 14]
    flags[4] = True  # segments 2,2,26,10: 2+2 reaches min 4 -> [4]; 26 -> 16 + 10; last 10 waits
    assert cut_events(flags, min_size=4, max_size=16) == [4, 16, 10]
    assert cut_events([False] * 40, min_size=4, max_size=16) == [16, 16]  # no boundary: max-size blocks
    assert cut_events([False] * 10, min_size=4, max_size=16) == []  # open event waits


def test_cut_events_carry_over_across_calls():
    """The waiting segment is cut once its closing boundary arrives, in a later call."""
    first = [False] * 12
    first[5] = True
    assert cut_events(first, 4, 32) == [5]  # [5, 12) waits
    later = [False] * 20  # the 7 waiting tokens + 13 new ones, boundary at new token 3
    later[7 + 3] = True
    assert cut_events(later, 4, 32) == [10]


def _sequence(cfg: EMConfig, layers: int = 1, heads: int = 2, kv_heads: int = 1, dim: int = 8) -> SequenceMemory:
    mems = [
        LayerMemory(heads, kv_heads, dim, cfg.n_local, cfg.n_init, cfg.uses_memory, torch.float32, torch.device("cpu"))
        for _ in range(layers)
    ]
    return SequenceMemory(
        config=cfg,
        layers=mems,
        memory_layers=list(range(layers)),
        hidden_size=4,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


def _feed(seq: SequenceMemory, n: int, surprise: torch.Tensor | None = None) -> None:
    """Append n tokens (random keys) to every layer and evict; surprise[t] is the designed surprise of token t."""
    for layer in seq.layers:
        layer.append(
            torch.randn(layer.num_kv_heads, n, layer.head_dim), torch.randn(layer.num_kv_heads, n, layer.head_dim)
        )
    start = seq.length
    ids = torch.arange(start, start + n)
    seq.record(ids, torch.zeros(n, 4))

    def log_prob(hidden, targets):
        return -surprise[targets]

    seq.evict(log_prob)


@pytest.mark.parametrize("convention,expected_start", [("paper", 40), ("reference", 39)])
def test_boundary_at_vs_before_the_surprising_token(convention, expected_start):
    cfg = EMConfig(
        n_init=0,
        n_local=8,
        n_mem=64,
        chunk_size=4,
        min_block_size=2,
        max_block_size=64,
        surprise_window=16,
        boundary=convention,
    )
    surprise = torch.ones(200) + 0.01 * torch.randn(200, generator=torch.Generator().manual_seed(0))
    surprise[40] = 50.0
    seq = _sequence(cfg)
    for _ in range(20):
        _feed(seq, 4, surprise)
    starts = seq.layers[0].store.positions
    assert expected_start in starts
    assert (40 if convention == "reference" else 39) not in starts


def test_events_tile_evicted_tokens_exactly_once():
    cfg = EMConfig(n_init=3, n_local=16, n_mem=32, chunk_size=4, min_block_size=2, max_block_size=8, surprise_window=16)
    surprise = torch.rand(500, generator=torch.Generator().manual_seed(1)) * 5
    seq = _sequence(cfg, layers=2)
    for _ in range(60):
        _feed(seq, 4, surprise)
    for layer in seq.layers:
        store = layer.store
        spans = list(zip(store.positions, store.sizes.tolist(), strict=True))
        assert spans[0][0] == cfg.n_init and len(layer.init_k) == cfg.n_init
        for (p, n), (q, _) in zip(spans, spans[1:], strict=False):
            assert p + n == q  # contiguous, no gap, no overlap
        assert spans[-1][0] + spans[-1][1] == layer.tail_start
        assert all(cfg.min_block_size <= n <= cfg.max_block_size for _, n in spans)
        assert layer.tail_end == seq.length == 240
        # everything still in the tail is inside the window of the next query, or waits for its event
        assert seq.length - layer.tail_start < cfg.n_local + cfg.max_block_size
    assert seq.layers[0].store.positions == seq.layers[1].store.positions


# ---- exactly-once attention and the memory bound ----------------------------------------------------


def _identity_rope(x, positions):
    shape = (1, positions.shape[-1], x.shape[-1] if x.dim() > 2 else 8)
    return torch.ones(shape), torch.zeros(shape)


@pytest.mark.parametrize("chunk,n_mem,contiguity", [(4, 24, 0.0), (7, 32, 0.3), (1, 16, 0.0)])
def test_every_past_token_seen_at_most_once_and_window_exactly_once(chunk, n_mem, contiguity):
    """Keys are zero (uniform attention) and values one-hot positions: each output row is
    (1/visible) * multiplicity of each position, so a token attended twice shows up as 2/visible."""
    cfg = EMConfig(
        n_init=3,
        n_local=12,
        n_mem=n_mem,
        chunk_size=chunk,
        min_block_size=2,
        max_block_size=6,
        segmentation="uniform",
        contiguity_fraction=contiguity,
    )
    total, dim = 160, 160
    rope = RopeTable(
        lambda x, pos: (torch.ones(1, pos.shape[-1], dim), torch.zeros(1, pos.shape[-1], dim)),
        torch.float32,
        torch.device("cpu"),
    )
    layer = LayerMemory(2, 1, dim, cfg.n_local, cfg.n_init, True, torch.float32, torch.device("cpu"))
    seq = SequenceMemory(
        config=cfg, layers=[layer], memory_layers=[0], hidden_size=4, dtype=torch.float32, device=torch.device("cpu")
    )
    visible_of: dict[int, int] = {}
    for s in range(0, total, chunk):
        n = min(chunk, total - s)
        values = torch.nn.functional.one_hot(torch.arange(s, s + n), dim).float()[None]
        layer.append(torch.zeros(1, n, dim), values)
        q = torch.randn(1, 2, n, dim) * 0  # zero queries: every visible key gets the same weight
        out = memory_attention(layer, q, s, scale=1.0, rope=rope, config=cfg)[0, 0]  # [n, dim]
        for i in range(n):
            p = s + i
            row = out[i]
            visible = int((row > 0).sum())
            assert torch.allclose(row[row > 0], torch.full((visible,), 1.0 / visible), atol=1e-5), "seen twice"
            seen = set(torch.nonzero(row > 0).flatten().tolist())
            window = set(range(max(0, p - cfg.n_local + 1), p + 1))
            assert window <= seen, "every token of the local window is attended"
            assert not (seen & set(range(p + 1, total))), "no future token"
            assert set(range(min(cfg.n_init, p + 1))) <= seen, "sinks always attended"
            assert visible <= cfg.n_init + cfg.n_local + cfg.n_mem + cfg.chunk_size
            visible_of[p] = visible
        # Attention mass of the oldest tail keys (used for representative keys): with uniform attention,
        # key j receives 1/visible(p) from every query p whose window holds it.
        done = s + n
        complete = [j for j in range(layer.tail_start, done) if j + cfg.n_local - 1 < done][:8]
        if complete:
            mass = layer.window_mass(len(complete))[0]
            expected = torch.tensor([sum(1.0 / visible_of[p] for p in range(j, j + cfg.n_local)) for j in complete])
            assert torch.allclose(mass, expected, rtol=1e-2), "window mass = sum of in-window probabilities"
        seq.record(None, torch.zeros(n, 4))
        seq.evict(None)


# ---- refinement ----------------------------------------------------------------------------------------


def _two_communities(split: int, size: int) -> torch.Tensor:
    adj = torch.full((size, size), 0.05)
    adj[:split, :split] = 1.0
    adj[split:, split:] = 1.0
    return adj


@pytest.mark.parametrize("metric", ["modularity", "conductance"])
def test_refinement_finds_the_planted_split(metric):
    adj = _two_communities(split=11, size=30)
    assert refine_boundary(adj, lo=3, hi=20, metric=metric) == 11


def test_refinement_may_keep_the_surprise_boundary():
    adj = _two_communities(split=20, size=30)
    assert refine_boundary(adj, lo=3, hi=20, metric="modularity") == 20  # the reference could only move earlier


def test_vectorised_scores_equal_direct_formulas():
    torch.manual_seed(0)
    adj = torch.rand(12, 12, dtype=torch.float64)
    adj = (adj + adj.T) / 2
    cands = torch.arange(1, 12)
    mod = modularity_scores(adj, cands)
    con = conductance_scores(adj, cands)
    two_m = adj.sum()
    deg = adj.sum(1)
    for j, t in enumerate(cands.tolist()):
        comm = torch.zeros(12, dtype=torch.bool)
        comm[:t] = True
        same = comm[:, None] == comm[None, :]
        q = ((adj - deg[:, None] * deg[None, :] / two_m) * same).sum() / two_m
        assert mod[j].item() == pytest.approx(q.item(), rel=1e-6, abs=1e-9)
        cut = adj[:t, t:].sum()
        vol = torch.minimum(deg[:t].sum(), deg[t:].sum())
        assert con[j].item() == pytest.approx((cut / vol).item(), rel=1e-6)


def test_refine_boundaries_moves_a_misplaced_boundary_to_the_key_change():
    torch.manual_seed(0)
    a, b = torch.randn(4), torch.randn(4)
    keys = torch.stack([a + 0.05 * torch.randn(4) for _ in range(15)] + [b + 0.05 * torch.randn(4) for _ in range(25)])
    keys_fn = lambda s, e: keys[s:e][None, None]  # noqa: E731
    assert refine_boundaries(keys_fn, [19], start=0, end=40, min_size=4, metric="modularity") == [15]


# ---- retrieval -----------------------------------------------------------------------------------------


def test_similarity_selection_respects_budget_and_order():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.8, 0.2])
    sizes = torch.tensor([4, 6, 3, 5, 2])
    assert select_by_similarity(scores, sizes, budget=11) == [1, 3]
    assert select_by_similarity(scores, sizes, budget=14) == [1, 3, 2]
    assert select_by_similarity(scores, sizes, budget=100) == [0, 1, 2, 3, 4]
    assert select_by_similarity(scores, sizes, budget=0) == []


def test_contiguity_neighbours_and_queue():
    sizes = torch.full((10,), 4)
    neighbours = contiguity_neighbours([5, 2], 10, sizes, budget=12, exclude={5, 2})
    assert neighbours == [6, 4, 3]
    # The persistent buffer keeps older neighbours after new ones while they fit, never a retrieved one.
    buffer = update_contiguity_buffer(old=[8, 9, 1], new=[6, 4], sizes=sizes, budget=12, exclude={9})
    assert buffer == [6, 4, 8]


# ---- config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"chunk_size": 600, "n_local": 512}, "chunk_size"),
        ({"min_block_size": 64, "max_block_size": 8}, "min_block_size"),
        ({"n_mem": 64, "max_block_size": 128}, "smaller than one event"),
        ({"segmentation": "sentence"}, "segmentation"),
        ({"contiguity_fraction": 1.5}, "contiguity_fraction"),
        ({"n_local": 0}, "n_local"),
    ],
)
def test_impossible_configs_fail_at_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EMConfig(**kwargs)


@pytest.mark.parametrize(
    "name,n_local,n_mem,max_block",
    [
        ("mistral", 4096, 2048, 128),
        ("llama3", 4096, 4096, 128),
        ("llama31", 4096, 4096, 128),
        ("phi3", 1024, 3072, 128),
        ("phi35", 1024, 3072, 64),
    ],
)
def test_reference_presets(name, n_local, n_mem, max_block):
    cfg = EMConfig.preset(name)
    assert (cfg.n_init, cfg.n_local, cfg.n_mem, cfg.min_block_size, cfg.max_block_size) == (
        128,
        n_local,
        n_mem,
        8,
        max_block,
    )
    assert (cfg.repr_topk, cfg.chunk_size, cfg.gamma) == (4, 512, 1.0)
    assert cfg.surprise_window == n_local - 512


def test_unknown_preset_and_field():
    with pytest.raises(ConfigError, match="unknown EM preset"):
        EMConfig.preset("nope")
    with pytest.raises(ConfigError, match="unknown EMConfig field"):
        EMConfig.from_dict({"n_locall": 5})


# ---- kernels -------------------------------------------------------------------------------------------


def test_attend_and_merge_equal_dense_softmax():
    from memalign.memory.kernels import attend, merge

    torch.manual_seed(0)
    q = torch.randn(1, 4, 6, 8)
    k1, v1 = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)  # causal chunk
    k2, v2 = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)  # masked band
    band = torch.rand(6, 5) > 0.4
    band[:, 0] = True
    parts = [attend(q, k1, v1, 0.3, causal=True), attend(q, k2, v2, 0.3, mask=band)]
    out, lse = merge(parts)
    # dense reference with GQA expanded
    k = torch.cat([k1, k2], 2).repeat_interleave(2, dim=1)
    v = torch.cat([v1, v2], 2).repeat_interleave(2, dim=1)
    visible = torch.cat([torch.ones(6, 6, dtype=torch.bool).tril(), band], 1)
    logits = (q @ k.transpose(-1, -2) * 0.3).masked_fill(~visible, float("-inf"))
    probs = logits.softmax(-1)
    assert torch.allclose(out, probs @ v, atol=1e-5)
    assert torch.allclose(lse, logits.logsumexp(-1), atol=1e-5)


@pytest.mark.parametrize("block", [1, 3, 64])
@pytest.mark.parametrize("q_start,k_start,window", [(20, 9, 8), (20, 18, 8), (5, 0, 30), (20, 9, 1)])
def test_window_attention_equals_dense_softmax_with_key_mass(block, q_start, k_start, window):
    """Window attention merged with another key set equals one softmax over both; its key mass is the
    column sum of the final probabilities (what representative keys rank by)."""
    from memalign.memory.kernels import attend, window_attention

    torch.manual_seed(0)
    L = 7
    S = q_start + L - k_start
    q = torch.randn(4, L, 8)
    k, v = torch.randn(2, S, 8), torch.randn(2, S, 8)
    k_mem, v_mem = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    other = attend(q[None], k_mem, v_mem, 0.3)
    out, lse, mass = window_attention(q, k, v, 0.3, q_start, k_start, window, (other[0][0], other[1][0]), block=block)
    diff = torch.arange(q_start, q_start + L)[:, None] - torch.arange(k_start, k_start + S)[None, :]
    visible = torch.cat([torch.ones(L, 5, dtype=torch.bool), (diff >= 0) & (diff < window)], 1)
    keys = torch.cat([k_mem[0], k], 1).repeat_interleave(2, dim=0)
    vals = torch.cat([v_mem[0], v], 1).repeat_interleave(2, dim=0)
    logits = (q @ keys.transpose(-1, -2) * 0.3).masked_fill(~visible, float("-inf"))
    probs = logits.softmax(-1)
    assert torch.allclose(out, probs @ vals, atol=1e-5)
    assert torch.allclose(lse, logits.logsumexp(-1), atol=1e-5)
    assert torch.allclose(mass, probs[..., 5:].sum(-2), atol=1e-5)
    alone, lse_alone, mass_alone = window_attention(q, k, v, 0.3, q_start, k_start, window, block=block)
    local = logits[..., 5:]
    assert torch.allclose(alone, local.softmax(-1) @ vals[:, 5:], atol=1e-5)
    assert torch.allclose(mass_alone, local.softmax(-1).sum(-2), atol=1e-5)


def test_rotate_is_bit_identical_to_transformers():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from memalign.memory.rope import rotate

    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 16)
    angles = torch.randn(5, 8)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    ref, _ = apply_rotary_pos_emb(x, x, cos[None], sin[None])
    assert torch.equal(rotate(x, cos, sin), ref)


def test_sliding_window_buffer_stays_compact():
    from memalign.memory.buffers import TokenBuffer

    buf = TokenBuffer(1, (2,), torch.float32, torch.device("cpu"))
    counter = 0
    for _ in range(60):  # window of 2560 live tokens, chunks of 512 in and out (the EM tail's pattern)
        chunk = torch.arange(counter, counter + 512, dtype=torch.float32)[None, :, None].expand(1, 512, 2)
        buf.append(chunk)
        counter += 512
        if len(buf) > 2560:
            buf.pop_front(len(buf) - 2560)
        assert torch.equal(buf.view()[0, :, 0], torch.arange(counter - len(buf), counter, dtype=torch.float32))
    assert buf._data.shape[1] <= 2 * (2560 + 512)  # was 8192 with doubling and the half-full rule


def test_append_only_buffer_holds_at_most_its_growth_fraction_unused():
    """Representative matrices grow by 1/8: capacity beyond the rows used stays within that fraction."""
    from memalign.memory.buffers import TokenBuffer

    buf = TokenBuffer(1, (3,), torch.float32, torch.device("cpu"), growth=0.125)
    for i in range(5000):
        buf.append(torch.full((1, 1, 3), float(i)))
        assert buf.capacity <= max(256, 1.125 * len(buf) + 1)
    assert torch.equal(buf.view()[0, :, 0], torch.arange(5000, dtype=torch.float32))
    with pytest.raises(ValueError, match="growth"):
        TokenBuffer(1, (3,), torch.float32, torch.device("cpu"), growth=0)


def test_window_buffers_stop_growing_at_their_bound():
    """The tail (window + one unfinished event + one chunk) reaches a fixed capacity early in a long input
    and keeps it: host memory held by windows does not step up late in the input."""
    from memalign.memory import EMConfig, EpisodicMemory
    from memalign.testing import tiny_model

    model = tiny_model("qwen3")
    cfg = EMConfig(n_init=4, n_local=32, n_mem=32, chunk_size=16, min_block_size=2, max_block_size=8)
    bound = -(-4 * (cfg.n_local + cfg.max_block_size + cfg.chunk_size) // 3)
    ids = torch.randint(3, 500, (1, 800), generator=torch.Generator().manual_seed(0))
    capacities: list[set[int]] = []
    with torch.inference_mode(), EpisodicMemory(model, cfg) as mem:
        cache = mem.new_cache()

        def record(_: int) -> None:
            layers = cache.sequences[0].layers
            capacities.append(
                {b._data.shape[1] for layer in layers for b in (layer.tail_k, layer.tail_v, layer.tail_mass)}
            )

        mem.prefill(ids, cache=cache, progress=record)
    assert max(max(c) for c in capacities) <= bound
    assert capacities[len(capacities) // 4] == capacities[-1], "no reallocation past the first quarter"


@pytest.mark.parametrize(
    ("total", "alone", "expected"),
    [
        (1300, True, [0, 275, 787, 1299, 1300]),  # end-aligned body, then the last token alone
        (1300, False, [0, 276, 788, 1300]),
        (513, True, [0, 512, 513]),
        (2, True, [0, 1, 2]),
        (1, True, [0, 1]),  # a one-token prompt is a single step either way
    ],
)
def test_prefill_bounds(total, alone, expected):
    from memalign.memory.episodic import prefill_bounds

    assert prefill_bounds(total, 512, alone) == expected


def test_last_prompt_token_is_its_own_retrieval_step():
    """As the reference driver: the logits that pick the first answer token are those of a one-token step
    (its own retrieval) after the rest of the prompt, not of the last chunk's joint retrieval."""
    from memalign.memory import EpisodicMemory
    from memalign.testing import tiny_model

    model = tiny_model("qwen3")
    ids = torch.randint(3, 500, (1, 300), generator=torch.Generator().manual_seed(1))
    base = EMConfig(n_init=4, n_local=32, n_mem=32, chunk_size=16, min_block_size=2, max_block_size=8)
    with torch.inference_mode():
        with EpisodicMemory(model, base) as mem:
            sizes: list[int] = []
            _, alone = mem.prefill(ids, progress=sizes.append)
        with EpisodicMemory(model, base.replace(last_token_alone=False)) as mem:
            joint_sizes: list[int] = []
            _, joint = mem.prefill(ids, progress=joint_sizes.append)
            # By hand: all but the last token in end-aligned chunks, then the last token as its own call.
            cache, _ = mem.prefill(ids[:, :-1])
            _, stepped = mem.prefill(ids[:, -1:], cache=cache)
    assert sizes[-1] == 1 and sum(sizes) == 300 and max(sizes) == 16
    assert joint_sizes[-1] == 16 and sum(joint_sizes) == 300
    torch.testing.assert_close(alone, stepped)
    assert not torch.allclose(alone, joint, atol=1e-4), "the joint chunk retrieves differently at this length"


def test_empty_prompt_is_a_clear_error():
    from memalign.errors import MemalignError
    from memalign.memory import EpisodicMemory
    from memalign.testing import tiny_model

    cfg = EMConfig(n_init=4, n_local=32, n_mem=32, chunk_size=16, min_block_size=2, max_block_size=8)
    with EpisodicMemory(tiny_model("qwen3"), cfg) as mem, pytest.raises(MemalignError, match="at least one token"):
        mem.generate(torch.zeros(1, 0, dtype=torch.long))
