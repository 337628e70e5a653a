"""Tiny, randomly initialised models of every supported architecture, built offline from configs.

Used by the test-suite (and handy for users writing their own tests): no download, seconds to build.
Dims are small but keep the structural quirks that have bitten the reference code: Qwen3 with
``head_dim != hidden / heads``, Qwen3-MoE experts, Llama-3.1 ``llama3`` rope scaling, Phi-3 fused qkv
(and a partial-rotary variant), Gemma3 sliding-window layers with q/k norms.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
    Qwen3MoeConfig,
)

from memalign.registry import Registry

TINY_VOCAB = 512
_COMMON: dict[str, Any] = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
)


def _cfg(cls: type[PretrainedConfig], **overrides: Any) -> Callable[[], PretrainedConfig]:
    return lambda: cls(**{**_COMMON, **overrides})


TINY_CONFIGS: Registry[Callable[[], PretrainedConfig]] = Registry("tiny model kind", hint="(use tiny:<kind>)")
# head_dim 32 x 4 heads = 128 != hidden 64, as in real Qwen3 (16 x 128 != 1024).
TINY_CONFIGS.add("qwen3", _cfg(Qwen3Config, head_dim=32))
# Qwen3-MoE: every layer sparse, 2 of 4 experts per token.
_TINY_MOE = dict(
    num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1, mlp_only_layers=[]
)
TINY_CONFIGS.add("qwen3_moe", _cfg(Qwen3MoeConfig, head_dim=32, **_TINY_MOE))
TINY_CONFIGS.add(
    "llama",
    _cfg(
        LlamaConfig,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
)
TINY_CONFIGS.add("mistral", _cfg(MistralConfig, sliding_window=None))
TINY_CONFIGS.add("qwen2", _cfg(Qwen2Config))
TINY_CONFIGS.add("phi3", _cfg(Phi3Config))
TINY_CONFIGS.add("phi3_partial", _cfg(Phi3Config, partial_rotary_factor=0.5))
# 6 layers: five sliding-window layers then one global, as Gemma3's 5:1 pattern.
TINY_CONFIGS.add(
    "gemma3_text",
    _cfg(
        Gemma3TextConfig,
        head_dim=32,
        num_hidden_layers=6,
        num_key_value_heads=1,
        sliding_window=16,
        query_pre_attn_scalar=32,
    ),
)

TINY_KINDS: tuple[str, ...] = tuple(TINY_CONFIGS)


def tiny_config(kind: str) -> PretrainedConfig:
    """A fresh config of the tiny ``kind``; an unknown kind raises :class:`~memalign.errors.UnknownNameError`."""
    return TINY_CONFIGS[kind]()


def tiny_model(
    kind: str, seed: int = 0, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"
) -> PreTrainedModel:
    """A random-init ``*ForCausalLM`` of the given kind, in eval mode, deterministic for a seed."""
    config = tiny_config(kind)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    # Random init with std 0.02 gives near-uniform next-token distributions; a larger scale makes
    # attention patterns and surprise values non-trivial, which the invariance tests need.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "norm" not in name:
                param.normal_(0.0, 0.15)
    return model.eval()


_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. I am the life of the party. I worry about things. "
    "Very Accurate Moderately Accurate Neither Accurate Nor Inaccurate Moderately Inaccurate Very Inaccurate "
    "The pass key is 12345. Remember it. 0123456789 (A) (B) (C) (D) (E) Answer: Question: "
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
)


def tiny_tokenizer(vocab_size: int = TINY_VOCAB) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences, with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = _CHATML
    return fast


def write_tiny_qwen3_gguf(path: str | Path, seed: int = 0) -> tuple[Path, PreTrainedModel]:
    """Write a tiny random Qwen3 (head_dim 128, as every real Qwen3) to a GGUF file with llama.cpp names.

    Returns the path and the in-memory fp32 model whose weights were written, so a test can compare
    logits after loading the file back. transformers assumes head_dim 128 for GGUF arch ``qwen3``.
    """
    import gguf
    import numpy as np

    config = Qwen3Config(
        **{
            **_COMMON,
            "hidden_size": 128,
            "head_dim": 128,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        }
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    tokenizer = tiny_tokenizer(config.vocab_size)

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "qwen3")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tokenizer.get_vocab()
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    tokens += [f"[PAD{i}]" for i in range(config.vocab_size - len(tokens))]
    specials = set(tokenizer.all_special_tokens)
    token_types = [gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens]
    import json

    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(_CHATML)

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for i in range(config.num_hidden_layers):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}"] = f"blk.{i}.{gg}"
    state = model.state_dict()
    for hf_name, gguf_name in names.items():
        writer.add_tensor(gguf_name, state[hf_name].detach().cpu().numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, model
