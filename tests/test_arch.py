"""ArchSpec is right for every supported architecture, and unsupported ones fail clearly."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3Config, GPT2Config

from memalign import get_arch_spec
from memalign.errors import UnsupportedArchitectureError
from memalign.models import supported_model_types
from memalign.testing import TINY_KINDS, tiny_config, tiny_model


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_spec_matches_modules(kind):
    model = tiny_model(kind)
    spec = get_arch_spec(model)
    cfg = tiny_config(kind)
    assert spec.model_type == cfg.model_type
    assert spec.num_layers == cfg.num_hidden_layers == len(spec.decoder_layers(model))
    assert spec.num_heads == cfg.num_attention_heads
    assert spec.num_kv_heads == cfg.num_key_value_heads
    # o_proj consumes heads x head_dim features and every attention module agrees on head_dim.
    for i, (attn, o_proj) in enumerate(zip(spec.attentions(model), spec.o_projs(model), strict=True)):
        assert attn.head_dim == spec.head_dim
        assert o_proj.in_features == spec.q_size
        assert attn.layer_idx == i
    # The rotary module yields cos/sin of the rotary width for this layer.
    x = torch.zeros(1, 3, spec.hidden_size)
    cos, _ = spec.rotary_fn(model, 0)(x, torch.arange(3)[None])
    assert cos.shape[-1] == spec.rotary_dim
    assert len(spec.layer_types) == spec.num_layers


def test_qwen3_head_dim_is_read_not_derived():
    spec = get_arch_spec(tiny_model("qwen3"))
    assert spec.head_dim == 32 and spec.hidden_size // spec.num_heads == 16
    assert spec.has_qk_norm


def test_structural_flags():
    assert get_arch_spec(tiny_model("phi3")).fused_qkv
    assert get_arch_spec(tiny_model("phi3_partial")).rotary_dim == 8
    llama = get_arch_spec(tiny_model("llama"))
    assert llama.rope_type == "llama3" and llama.rope_theta == 500000.0
    gemma = get_arch_spec(tiny_model("gemma3_text"))
    assert gemma.layer_types.count("sliding_attention") == 5 and gemma.sliding_window == 16
    assert isinstance(gemma.rope_theta, dict) and gemma.has_qk_norm


def test_gemma3_multimodal_config_uses_text_part():
    text = tiny_config("gemma3_text")
    spec = get_arch_spec(Gemma3Config(text_config=text.to_dict()))
    assert spec.model_type == "gemma3"
    assert spec.head_dim == 32 and spec.num_layers == 6 and spec.family.layers_path == "model.language_model.layers"


def test_unsupported_architecture_names_type_and_supported_list():
    with pytest.raises(UnsupportedArchitectureError) as err:
        get_arch_spec(GPT2Config())
    message = str(err.value)
    assert "'gpt2'" in message
    for model_type in supported_model_types():
        assert model_type in message


def test_second_adapter_for_a_model_type_is_refused():
    from memalign.errors import DuplicateNameError
    from memalign.models import ARCH_REGISTRY, ArchFamily, register_arch

    before = ARCH_REGISTRY["llama"]
    with pytest.raises(DuplicateNameError, match="llama"):
        register_arch(ArchFamily("llama", fused_qkv=True))
    assert ARCH_REGISTRY["llama"] is before and not before.fused_qkv
