"""Chat with memory: a document read into memory, then several turns, feeding only new tokens."""

from __future__ import annotations

import torch

from memalign.generation import ChatSession, MemoryChatSession
from memalign.memory import EMConfig, EpisodicMemory
from memalign.testing import tiny_model, tiny_tokenizer


def test_memory_chat_turns_equal_full_context_generation_inside_the_window():
    model, tokenizer = tiny_model("qwen3"), tiny_tokenizer()
    first = ChatSession(model, tokenizer, max_new_tokens=6).ask("Remember it.")
    cfg = EMConfig(n_init=4, n_local=512, n_mem=64, chunk_size=64, min_block_size=4, max_block_size=16)
    with EpisodicMemory(model, cfg) as mem:
        chat = MemoryChatSession(mem, tokenizer, max_new_tokens=6)
        assert chat.ask("Remember it.") == first
        before = list(chat.fed_ids)
        second = chat.ask("The pass key is 12345.")
        fed = chat.cache.get_seq_length()
    # Turn 2 fed only its own tokens (the history was never re-fed) ...
    turn2 = chat.fed_ids[len(before) :]
    text2 = tokenizer.decode(turn2)
    assert "The pass key is 12345." in text2 and "Remember it." not in text2
    assert fed == len(chat.fed_ids) - 1  # everything but the last generated token is in memory
    # ... and the answer equals plain generation over exactly that token stream.
    generated = chat.last_generated
    prompt = torch.tensor([chat.fed_ids[: len(chat.fed_ids) - len(generated)]])
    ref = model.generate(prompt, max_new_tokens=6, do_sample=False)[0, prompt.shape[1] :]
    assert ref.tolist() == generated
    assert tokenizer.decode(generated, skip_special_tokens=True).strip() == second


def test_memory_chat_reads_a_long_document_beyond_the_window():
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    cfg = EMConfig(n_init=4, n_local=64, n_mem=64, chunk_size=32, min_block_size=4, max_block_size=16)
    with EpisodicMemory(model, cfg) as mem:
        chat = MemoryChatSession(mem, tokenizer, max_new_tokens=4)
        n = chat.read("The quick brown fox jumps over the lazy dog. " * 60)
        assert n > 4 * cfg.n_local
        chat.ask("Question: what did the fox do?")
        events = chat.cache.stats()
    assert all(row["events"] > 0 for row in events)
    assert all(row["tokens_in_window"] <= cfg.n_local + cfg.max_block_size + cfg.chunk_size for row in events)


def test_streamed_answers_go_to_the_callback_and_nothing_is_printed(capsys):
    model, tokenizer = tiny_model("qwen3"), tiny_tokenizer()
    pieces: list[str] = []
    answer = ChatSession(model, tokenizer, max_new_tokens=6).ask("Remember it.", stream=pieces.append)
    cfg = EMConfig(n_init=4, n_local=512, n_mem=64, chunk_size=64, min_block_size=4, max_block_size=16)
    memory_pieces: list[str] = []
    with EpisodicMemory(model, cfg) as mem:
        memory_answer = MemoryChatSession(mem, tokenizer, max_new_tokens=6).ask(
            "Remember it.", stream=memory_pieces.append
        )
    assert "".join(pieces).strip() == answer and "".join(memory_pieces).strip() == memory_answer == answer
    assert capsys.readouterr().out == ""


def test_system_prompt_is_fed_to_memory_with_the_first_turn():
    """Memory holds exactly the prompt plain chat would build (memalign.chat_format), system prompt included."""
    from memalign.chat_format import chat_input_ids

    model, tokenizer = tiny_model("qwen3"), tiny_tokenizer()
    cfg = EMConfig(n_init=4, n_local=512, n_mem=64, chunk_size=64, min_block_size=4, max_block_size=16)
    with EpisodicMemory(model, cfg) as mem:
        chat = MemoryChatSession(mem, tokenizer, system="Be brief.", max_new_tokens=3)
        chat.ask("Hi.")
    prompt = chat.fed_ids[: len(chat.fed_ids) - len(chat.last_generated)]
    assert prompt == chat_input_ids(
        tokenizer, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]
    )
