"""Real packaged models (slow: installs/convertes on first use, then ~1 s per load)."""

from __future__ import annotations

import time

import pytest
import torch

from memalign import get_arch_spec, load_model
from memalign.generation import ChatSession

pytestmark = pytest.mark.slow


def test_smollm2_loads_fast_and_answers():
    load_model("smollm2-135m-instruct")  # first use converts; the timed load below is the cached one
    start = time.perf_counter()
    model, tokenizer = load_model("smollm2-135m-instruct")
    assert time.perf_counter() - start < 3.0
    spec = get_arch_spec(model)
    assert (spec.model_type, spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim) == (
        "llama",
        30,
        9,
        3,
        64,
    )
    answer = ChatSession(model, tokenizer, max_new_tokens=16).ask("What is the capital of France?")
    assert "Paris" in answer


def test_smollm2_bf16_matches_fp32_top_token():
    model32, tokenizer = load_model("smollm2-135m-instruct", dtype="fp32")
    model16, _ = load_model("smollm2-135m-instruct", dtype="bf16")
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert model32(ids).logits[0, -1].argmax() == model16(ids).logits[0, -1].argmax()
