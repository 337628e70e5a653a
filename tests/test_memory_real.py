"""Episodic memory on a real packaged model (slow): a fact beyond the local window is recalled."""

from __future__ import annotations

import pytest
import torch
from conftest import shared_data

from memalign import load_model
from memalign.generation import MemoryChatSession
from memalign.memory import EMConfig, EpisodicMemory

pytestmark = pytest.mark.slow


def test_smollm2_recalls_a_code_word_through_retrieved_events():
    essays = shared_data("haystack", "paul_graham")
    text = (
        (essays / "apple.txt").read_text()[:6000]
        + "\nThe secret code word is PINEAPPLE-42.\n"
        + (essays / "bias.txt").read_text()[:6000]
    )
    model, tokenizer = load_model("smollm2-135m-instruct")
    cfg = EMConfig.preset("small")  # 1k local window: the code word (~1.1k tokens in) must come from memory
    with EpisodicMemory(model, cfg) as mem:
        chat = MemoryChatSession(mem, tokenizer, max_new_tokens=24)
        n = chat.read(text)
        answer = chat.ask("What is the secret code word?")
        stats = chat.cache.stats()
    assert n > 2 * cfg.n_local
    assert all(row["tokens_in_window"] <= cfg.n_local + cfg.chunk_size + cfg.max_block_size for row in stats)
    assert "PINEAPPLE" in answer.upper()


def test_smollm2_memory_matches_plain_attention_inside_the_window():
    model, tokenizer = load_model("smollm2-135m-instruct", dtype="fp32")
    ids = tokenizer("The capital of France is Paris. The capital of Italy is", return_tensors="pt")["input_ids"]
    plain = model.generate(ids, max_new_tokens=5, do_sample=False)[0, ids.shape[1] :]
    with EpisodicMemory(model, EMConfig.preset("small")) as mem:
        assert torch.equal(mem.generate(ids, max_new_tokens=5)[0], plain)
