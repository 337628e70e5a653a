"""The reference's entry point: patch_hf with its parameter names, its YAML configs, then plain generate."""

from __future__ import annotations

import pytest
import torch
import yaml

from memalign.compat import em_config_from_reference, load_reference_config, patch_hf, unpatch_hf
from memalign.errors import ConfigError, UnsupportedArchitectureError
from memalign.testing import tiny_model


def test_seed_example_verbatim_on_qwen3():
    model = tiny_model("qwen3")
    prompt = torch.randint(3, 500, (1, 20), generator=torch.Generator().manual_seed(0))
    reference = model.generate(prompt, max_new_tokens=6, do_sample=False)
    model = patch_hf(
        model, attn_type="em_llm", n_local=32, n_init=32, max_block_size=32, max_cached_block=32, exc_block_size=32
    )
    cfg = model.memalign_memory.config
    assert (cfg.n_local, cfg.n_init, cfg.max_block_size, cfg.chunk_size) == (32, 32, 32, 32)
    assert cfg.min_block_size <= cfg.max_block_size <= cfg.n_mem
    # a prompt far longer than the window: chunking happens inside generate, no extra argument
    long_prompt = torch.randint(3, 500, (1, 300), generator=torch.Generator().manual_seed(1))
    out = model.generate(long_prompt, max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 306)
    assert model.memalign_memory.active_cache is None
    # short prompts (inside the window) still match the unmodified model
    assert torch.equal(model.generate(prompt, max_new_tokens=6, do_sample=False), reference)
    unpatch_hf(model)
    assert model.config._attn_implementation == "sdpa"


def test_reference_yaml_loads_unchanged(tmp_path):
    reference_yaml = {
        "model": {
            "type": "em-llm",
            "path": "mistralai/Mistral-7B-Instruct-v0.2",
            "n_init": 128,
            "n_local": 4096,
            "n_mem": 2048,
            "min_block_size": 8,
            "max_block_size": 128,
            "repr_topk": 4,
            "max_cached_block": 512,
            "exc_block_size": 512,
            "base": 1000000,
            "distance_scale": 1.0,
            "surprisal_threshold_gamma": 1.0,
            "similarity_refinement_kwargs": {
                "similarity_refinement": True,
                "refine_with_buffer": True,
                "refine_from_layer": 20,
                "similarity_metric": "modularity",
            },
            "contiguity_buffer_kwargs": {"use_contiguity_buffer": True, "contiguity_buffer_size": 0.3},
            "uniform_blocks": False,
            "random_topk_blocks": False,
            "min_free_cpu_memory": 100,
            "disk_offload_threshold": 300000,
            "vector_offload_threshold": 50000,
        },
        "chunk_size": 512,
        "conv_type": "mistral-inst",
        "truncation": None,
    }
    path = tmp_path / "mistral.yaml"
    path.write_text(yaml.safe_dump(reference_yaml))
    kwargs = load_reference_config(path)
    assert kwargs.pop("attn_type") == "em-llm"
    with pytest.warns(UserWarning, match="rotary"):
        cfg = em_config_from_reference(**kwargs)
    assert (cfg.n_init, cfg.n_local, cfg.n_mem, cfg.chunk_size) == (128, 4096, 2048, 512)
    assert cfg.refinement == "modularity" and cfg.refine_from_layer == 20
    assert cfg.contiguity_fraction == pytest.approx(0.3)


@pytest.mark.parametrize("attn_type,segmentation,n_mem", [("inf_llm", "uniform", 64), ("stream_llm", "surprise", 0)])
def test_other_reference_attention_types(attn_type, segmentation, n_mem):
    model = patch_hf(
        tiny_model("llama"), attn_type=attn_type, n_local=32, n_init=4, n_mem=64, max_block_size=16, exc_block_size=16
    )
    assert model.memalign_memory.config.segmentation == segmentation
    assert model.memalign_memory.config.n_mem == n_mem
    assert model.generate(torch.randint(3, 500, (1, 100)), max_new_tokens=3, do_sample=False).shape == (1, 103)
    unpatch_hf(model)


def test_bad_inputs_fail_clearly():
    model = tiny_model("qwen2")
    with pytest.raises(ConfigError, match="unknown attn_type"):
        patch_hf(model, attn_type="landmark")
    with pytest.raises(ConfigError, match="unknown EM-LLM parameter"):
        patch_hf(model, attn_type="em_llm", n_local=32, frobnicate=1)
    with pytest.raises(ConfigError, match="chunk_size"):
        patch_hf(model, attn_type="em_llm", n_local=32, exc_block_size=64)
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        patch_hf(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2)), attn_type="em_llm", n_local=32)


def test_origin_leaves_model_untouched():
    model = tiny_model("mistral")
    assert patch_hf(model, attn_type="origin") is model
    assert not hasattr(model, "memalign_memory")
