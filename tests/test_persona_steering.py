"""Hook site, head slicing, reversibility, stacking, positions policy, batching and bake, on every tiny kind."""

from __future__ import annotations

import pytest
import torch

from memalign import get_arch_spec
from memalign.errors import ConfigError, MemalignError, UnsupportedArchitectureError
from memalign.persona import ContextBank, Steering, bake, capture_last_token
from memalign.persona.bake import o_proj_bias_field
from memalign.testing import TINY_KINDS, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


BAKEABLE = {"qwen3", "qwen3_moe", "llama", "gemma3_text"}  # attention_bias turns on an o_proj bias
AS_LLAMA = {"qwen2", "mistral"}  # no o_proj bias field, but exactly expressible as Llama


@pytest.fixture(scope="module")
def models():
    return {}


def get(models, kind):
    if kind not in models:
        models[kind] = tiny_model(kind)
    return models[kind]


def random_steering(model, k=3, alpha=2.0, positions="all", seed=0):
    spec = get_arch_spec(model)
    gen = torch.Generator().manual_seed(seed)
    flat = torch.randperm(spec.num_layers * spec.num_heads, generator=gen)[:k]
    heads = [divmod(int(i), spec.num_heads) for i in flat]
    directions = torch.nn.functional.normalize(torch.randn(k, spec.head_dim, generator=gen), dim=-1)
    return Steering(
        tuple(heads),
        directions,
        torch.rand(k, generator=gen) + 0.5,
        alpha,
        spec.num_layers,
        spec.num_heads,
        spec.head_dim,
        positions,
    )


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.tensor([[5, 17, 42, 99, 7, 300, 12, 8, 64, 3]])


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_alpha_zero_detach_and_stacking_restore_exactly(models, kind):
    model = get(models, kind)
    base = logits(model, IDS)
    a, b = random_steering(model, seed=1), random_steering(model, seed=2, positions="generated")
    with a.apply(model, alpha=0.0):
        assert torch.equal(logits(model, IDS), base)
    with a.apply(model):
        only_a = logits(model, IDS)
    assert not torch.allclose(only_a, base)
    assert torch.equal(logits(model, IDS), base)
    with b.apply(model):
        only_b = logits(model, IDS)
    ha, hb = a.apply(model), b.apply(model)
    both = logits(model, IDS)
    assert not torch.allclose(both, only_a) and not torch.allclose(both, only_b)
    ha.remove()
    assert torch.equal(logits(model, IDS), only_b)
    ha.remove()  # idempotent
    hb.remove()
    assert torch.equal(logits(model, IDS), base)
    hb2, ha2 = b.apply(model), a.apply(model)
    hb2.remove()
    assert torch.equal(logits(model, IDS), only_a)
    ha2.remove()
    assert torch.equal(logits(model, IDS), base)


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_capture_reads_o_proj_input_split_by_read_head_dim(models, kind):
    model = get(models, kind)
    spec = get_arch_spec(model)
    outputs = {}
    o_proj = spec.o_proj(model, 0)
    handle = o_proj.register_forward_hook(lambda m, a, out: outputs.setdefault("out", out))
    with capture_last_token(model) as records:
        logits(model, IDS)
    handle.remove()
    captured = records[0][0]
    assert captured.shape == (1, spec.num_heads, spec.head_dim)
    # The recorded heads, re-concatenated, are exactly what o_proj multiplies at the last position.
    with torch.no_grad():
        assert torch.allclose(o_proj(captured.reshape(1, -1)), outputs["out"][:, -1], atol=1e-5)


def test_qwen3_head_slice_is_head_dim_wide(models):
    model = get(models, "qwen3")
    spec = get_arch_spec(model)
    assert spec.head_dim * spec.num_heads != spec.hidden_size  # 4 x 32 = 128 != 64: the PAlign bug case
    direction = torch.zeros(1, spec.head_dim)
    direction[0, -1] = 1.0
    steering = Steering(((1, 2),), direction, torch.tensor([1.0]), 3.0, spec.num_layers, spec.num_heads, spec.head_dim)
    seen = []
    with steering.apply(model):
        hook = spec.o_proj(model, 1).register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
        logits(model, IDS)
        hook.remove()
    hook = spec.o_proj(model, 1).register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    logits(model, IDS)
    hook.remove()
    diff = (seen[0] - seen[1]).abs().amax(dim=(0, 1))
    changed = diff.nonzero().flatten().tolist()
    assert changed == [3 * spec.head_dim - 1]  # last element of head 2's slice [64, 96)
    assert torch.allclose(diff[changed], torch.tensor([3.0]))


def test_generated_policy_touches_only_new_positions(models):
    model = get(models, "llama")
    spec = get_arch_spec(model)
    steering = random_steering(model, k=2, positions="generated")
    layer = steering.heads[0][0]
    seen = []

    def record(module, args):
        seen.append(args[0].clone())

    for ids in (IDS, IDS[:, :1]):
        with steering.apply(model):
            hook = spec.o_proj(model, layer).register_forward_pre_hook(record)
            logits(model, ids)
            hook.remove()
        hook = spec.o_proj(model, layer).register_forward_pre_hook(record)
        logits(model, ids)
        hook.remove()
    prompt_diff = (seen[0] - seen[1]).abs().amax(dim=-1)[0]
    assert torch.all(prompt_diff[:-1] == 0) and prompt_diff[-1] > 0
    assert (seen[2] - seen[3]).abs().max() > 0  # a one-token (decoding) forward is steered
    with pytest.raises(ConfigError, match="positions must be one of"):
        steering.apply(model, positions="prompt")


def test_wrong_dims_refused(models):
    steering = random_steering(get(models, "qwen3"))
    with pytest.raises(MemalignError, match="fit on a model with"):
        steering.apply(get(models, "llama"))


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_context_bank_matches_one_prompt_at_a_time(models, kind):
    model = get(models, kind)
    prefix = [5, 6, 7, 8]
    contexts = [prefix + [20 + i] * (1 + i % 3) + [40 + i] for i in range(5)]
    continuation = [[90 + i, 91] for i in range(5)]
    bank = ContextBank.build(model, contexts, batch_size=2)
    assert bank.prefix_len == 4
    rows = [4, 0, 2, 2]  # any order, repeats allowed
    got = bank.run(model, [continuation[r] for r in rows], rows, max_rows=3)
    for n, r in enumerate(rows):
        want = logits(model, torch.tensor([contexts[r] + continuation[r]]))[0, -1]
        assert torch.allclose(got[n], want, atol=1e-4), (kind, r)


def test_context_bank_without_shared_prefix_and_round_trip(models, tmp_path):
    model = get(models, "qwen2")
    contexts = [[11, 12, 13], [40, 41], [77, 78, 79, 80]]
    bank = ContextBank.build(model, contexts, batch_size=2)
    assert bank.prefix_len == 0
    got = bank.run(model, [[5], [6], [7]])
    bank.save(tmp_path / "bank.safetensors")
    again = ContextBank.load(tmp_path / "bank.safetensors").run(model, [[5], [6], [7]])
    assert torch.equal(got, again)
    for n, ctx in enumerate(contexts):
        assert torch.allclose(got[n], logits(model, torch.tensor([ctx + [5 + n]]))[0, -1], atol=1e-4)
    with pytest.raises(ConfigError, match="same length"):
        bank.run(model, [[5], [6, 7], [8]])


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_bake_matches_hook_after_reload_or_refuses(models, kind, tmp_path):
    from transformers import AutoModelForCausalLM

    model = get(models, kind)
    steering = random_steering(model, k=4, alpha=3.0)
    base = logits(model, IDS)
    with steering.apply(model):
        hooked = logits(model, IDS)
    if kind not in BAKEABLE:
        with pytest.raises(UnsupportedArchitectureError, match="o_proj without a bias"):
            bake(model, steering, tmp_path / "baked")
        if kind not in AS_LLAMA:
            with pytest.raises(UnsupportedArchitectureError, match="cannot be re-expressed as Llama"):
                bake(model, steering, tmp_path / "baked", as_llama=True)
            return
        bake(model, steering, tmp_path / "baked", as_llama=True)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "baked", dtype=torch.float32).eval()
        assert type(reloaded).__name__ == "LlamaForCausalLM"
        assert torch.allclose(logits(reloaded, IDS), hooked, atol=1e-4)
        assert torch.equal(logits(model, IDS), base)
        return
    assert o_proj_bias_field(model)[0] == "attention_bias"
    bake(model, steering, tmp_path / "baked")
    assert torch.equal(logits(model, IDS), base)  # the model itself is left as it was
    assert all(o.bias is None for o in get_arch_spec(model).o_projs(model))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "baked", dtype=torch.float32).eval()
    assert torch.allclose(logits(reloaded, IDS), hooked, atol=1e-4)
    with pytest.raises(ConfigError, match="positions='all'"):
        bake(model, random_steering(model, positions="generated"), tmp_path / "x")


def test_context_bank_option_columns_equal_the_soft_capped_head(models):
    """``run(vocab=...)`` rebuilds the head for a few columns; Gemma's final soft-cap must be applied too."""
    model = get(models, "gemma3_text")
    contexts = [[5, 6, 7, 8, 20 + i] for i in range(3)]
    bank = ContextBank.build(model, contexts, batch_size=2)
    vocab = [3, 17, 42, 99]
    config = model.config.get_text_config()
    before = config.final_logit_softcapping
    try:
        outputs = {}
        for cap in (None, 0.05):
            config.final_logit_softcapping = cap
            outputs[cap] = bank.run(model, [[9]] * 3)
            assert torch.allclose(bank.run(model, [[9]] * 3, vocab=vocab), outputs[cap][:, vocab], atol=1e-5)
        assert not torch.allclose(outputs[None], outputs[0.05], atol=1e-3)  # the cap really changes the logits
    finally:
        config.final_logit_softcapping = before
