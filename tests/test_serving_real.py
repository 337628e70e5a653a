"""`memalign serve` on a real packaged model (slow): SmolLM2-135M-Instruct behind uvicorn on 127.0.0.1,
spoken to with the official openai client.

The preset installs and converts on first use (``load_model`` in the fixture does it once, inside
``$MEMALIGN_CACHE``), so the servers started afterwards only load it. They run in fp32: a batch must give
each row the answer it gets alone, and greedy answers are compared token for token.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import pytest
from test_serving_http import Server
from test_serving_steering import random_steering

from memalign import load_model
from memalign.persona.artifact import save_steering

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow

PRESET = "smollm2-135m-instruct"
# A small window so a two-turn conversation already leaves it: the restart must restore retrieved events too.
MEMORY_YAML = "n_init: 16\nn_local: 256\nn_mem: 256\nchunk_size: 64\nmin_block_size: 8\nmax_block_size: 32\n"
FILLER = (
    "Between the facts, a long note about the garden. The tomatoes ripened late this year because the spring "
    "was cold and wet, and the beans climbed the fence faster than anyone expected. Every morning the "
    "neighbour's cat walked along the wall, stopped by the gate, and looked at the pond for a while before "
    "it went on. The apple tree gave so much fruit that we made jam, juice and three kinds of pie. "
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve-real")
    model, _ = load_model(PRESET, dtype="fp32")  # installs and converts the preset when the cache is empty
    for seed, name in enumerate(["ann", "bob"], start=1):
        # strong enough to change a real model's greedy answer within a few tokens
        save_steering(random_steering(model, seed, alpha=60.0), folder / "personas" / name)
    (folder / "memory.yaml").write_text(MEMORY_YAML)
    return folder


def _start(root: Path) -> Server:
    return Server(
        root,
        "--state",
        str(root / "state"),
        model=PRESET,
        served="smol",
        threads=2,
        start_timeout_s=300.0,
    )


def _ask(client, messages, max_tokens: int = 12, **kwargs):
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return client.chat.completions.create(
        model=kwargs.pop("model", "smol"), messages=messages, max_tokens=max_tokens, temperature=0, **kwargs
    )


def test_smollm2_server_answers_streams_batches_personas_and_keeps_a_conversation_across_kill_9(root):
    server = _start(root)
    try:
        client = server.client()
        # a plain answer, the same answer streamed
        plain = _ask(client, "What is the capital of France?", max_tokens=16)
        assert "paris" in plain.choices[0].message.content.lower()
        stream = client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == plain.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

        # two personas and no persona in one batch: each row answers as it does alone
        prompt = "Describe your ideal weekend."
        personas = [None, "ann", "bob"]
        alone = [_ask(client, prompt, extra_body={"persona": p}).choices[0].message.content for p in personas]
        assert len(set(alone)) == 3  # the personas change the real model's answer
        steps = httpx.get(f"{server.url}/health").json()["decode_steps"]
        with concurrent.futures.ThreadPoolExecutor(len(personas)) as pool:
            futures = [pool.submit(_ask, client, prompt, extra_body={"persona": p}) for p in personas]
            together = [f.result() for f in futures]
        assert [c.choices[0].message.content for c in together] == alone
        shared = httpx.get(f"{server.url}/health").json()["decode_steps"] - steps
        assert shared < sum(c.usage.completion_tokens - 1 for c in together)  # rows shared decode steps

        # a conversation that leaves the memory window, answered once without a restart as the reference
        turns = [
            "The secret code word is PINEAPPLE-42. Remember it. " + FILLER * 3,
            "What is the secret code word?",
        ]
        reference = [_ask(client, t, max_tokens=16, extra_body={"conversation_id": "ref"}) for t in turns]
        first = _ask(client, turns[0], max_tokens=16, extra_body={"conversation_id": "kept"})
        assert first.choices[0].message.content == reference[0].choices[0].message.content
        held = httpx.get(f"{server.url}/v1/conversations/kept").json()
        assert held["turns"] == 1 and held["tokens_held"] > 256  # past n_local: part of it lives in events
        server.kill()
        server.stop()

        server = _start(root)
        held = httpx.get(f"{server.url}/v1/conversations/kept").json()
        assert held["turns"] == 1 and not held["in_memory"]
        # the client resends the whole history; only the new message is fed, the rest comes from disk
        history = [
            {"role": "user", "content": turns[0]},
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": turns[1]},
        ]
        second = _ask(server.client(), history, max_tokens=16, extra_body={"conversation_id": "kept"})
        assert second.usage.prompt_tokens == reference[1].usage.prompt_tokens < 40
        assert second.choices[0].message.content == reference[1].choices[0].message.content
        assert httpx.get(f"{server.url}/v1/conversations/kept").json()["turns"] == 2
    finally:
        server.stop()
