"""`memalign serve` for real: uvicorn on 127.0.0.1 in a subprocess, spoken to with the official openai client."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from safetensors.torch import load_file
from test_serving_steering import random_steering

from memalign.memory.snapshot import read_manifest
from memalign.persona.artifact import save_steering
from memalign.serving.process import ServerProcess
from memalign.testing import tiny_model

openai = pytest.importorskip("openai")

MEMORY_YAML = "n_init: 4\nn_local: 48\nn_mem: 32\nchunk_size: 16\nmin_block_size: 4\nmax_block_size: 16\n"
KEYS = {"alice-key": ["ann"], "root-key": ["*"]}


class Server(ServerProcess):
    """A `memalign serve` subprocess with the memory config and personas under ``root``.

    ``threads`` is the server's ``--threads`` (and OMP threads): one for tiny models (a second thread only
    waits on a busy machine), more for a real model."""

    def __init__(
        self,
        root: Path,
        *extra: str,
        model: str = "tiny:qwen3",
        served: str = "tiny",
        threads: int = 1,
        start_timeout_s: float = 90.0,
    ) -> None:
        command = [sys.executable, "-m", "memalign", "serve", "--model", model, "--served-name", served]
        command += ["--dtype", "fp32", "--memory", str(root / "memory.yaml"), "--personas", str(root / "personas")]
        command += ["--port", "{port}", "--max-tokens-limit", "600", "--threads", str(threads), *extra]
        log = root / f"server-{len(list(root.glob('server-*.log')))}.log"
        super().__init__(command, log, threads=threads, start_timeout_s=start_timeout_s)

    def client(self, key: str = "root-key") -> openai.OpenAI:
        return super().client(api_key=key)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    model = tiny_model("qwen3")
    for seed, name in enumerate(["ann", "bob"], start=1):
        save_steering(random_steering(model, seed), root / "personas" / name)
    (root / "memory.yaml").write_text(MEMORY_YAML)
    (root / "keys.json").write_text(json.dumps(KEYS))
    return root


@pytest.fixture(scope="module")
def server(setup):
    srv = Server(setup, "--api-keys", str(setup / "keys.json"), "--state", str(setup / "state"))
    yield srv
    srv.stop()


def _ask(client, text: str, **kwargs):
    return client.chat.completions.create(
        model=kwargs.pop("model", "tiny"),
        messages=[{"role": "user", "content": text}],
        max_tokens=kwargs.pop("max_tokens", 6),
        temperature=0,
        **kwargs,
    )


def test_models_plain_streamed_and_persona_answers(server):
    client = server.client()
    assert [m.id for m in client.models.list()] == ["tiny", "tiny:ann", "tiny:bob"]
    assert [m.id for m in server.client("alice-key").models.list()] == ["tiny", "tiny:ann"]
    plain = _ask(client, "The quick brown fox.")
    assert plain.object == "chat.completion" and plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason in ("stop", "length") and plain.usage.completion_tokens <= 6
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "The quick brown fox."}],
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    ann = _ask(client, "The quick brown fox.", extra_body={"persona": "ann"})
    assert (
        _ask(client, "The quick brown fox.", model="tiny:ann").choices[0].message.content
        == ann.choices[0].message.content
    )
    assert ann.choices[0].message.content != plain.choices[0].message.content


def test_two_personas_in_one_batch_answer_as_alone(server):
    import concurrent.futures

    client = server.client()
    alone = {
        p: _ask(client, "I worry about things.", model=f"tiny:{p}", max_tokens=12).choices[0].message.content
        for p in ("ann", "bob")
    }
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = {
            p: pool.submit(_ask, client, "I worry about things.", model=f"tiny:{p}", max_tokens=12)
            for p in ("ann", "bob", "ann", "bob")
        }
        together = {p: f.result().choices[0].message.content for p, f in futures.items()}
    assert together == alone and alone["ann"] != alone["bob"]


def test_keys_personas_and_conversations_are_isolated(server):
    alice, root = server.client("alice-key"), server.client("root-key")
    with pytest.raises(openai.AuthenticationError):
        server.client("wrong-key").models.list()
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    with pytest.raises(openai.PermissionDeniedError, match="bob"):
        _ask(alice, "hi", extra_body={"persona": "bob"})
    _ask(alice, "Remember it.", extra_body={"conversation_id": "alice-1", "persona": "ann"})
    held = httpx.get(f"{server.url}/v1/conversations/alice-1", headers={"Authorization": "Bearer alice-key"}).json()
    assert held["turns"] == 1 and held["tokens_held"] > 0
    foreign = httpx.get(f"{server.url}/v1/conversations/alice-1", headers={"Authorization": "Bearer root-key"})
    assert foreign.status_code == 404 and "alice-1" in foreign.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        _ask(root, "hi", extra_body={"conversation_id": "alice-1"})
    gone = httpx.delete(f"{server.url}/v1/conversations/alice-1", headers={"Authorization": "Bearer alice-key"})
    assert gone.json()["deleted"] is True


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b'{"model": "tiny", "messages": [', 400, None),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}',
            400,
            "max_tokens",
        ),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": 3}]}', 400, "messages.0.content.str"),
        (b'{"model": "tiny", "messages": []}', 400, "messages"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "persona": "zed"}', 400, "persona"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 601}', 400, "max_tokens"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tools": []}', 400, "tools"),
        (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}', 404, "model"),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "conversation_id": "a/b"}',
            400,
            "conversation_id",
        ),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(server, body, status, param):
    reply = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=body,
        headers={"Authorization": "Bearer root-key", "Content-Type": "application/json"},
    )
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["message"] and error["type"] and "Traceback" not in reply.text
    assert error["param"] == param


def test_unknown_conversation_and_route(server):
    headers = {"Authorization": "Bearer root-key"}
    assert httpx.get(f"{server.url}/v1/conversations/nobody", headers=headers).status_code == 404
    assert httpx.delete(f"{server.url}/v1/conversations/nobody", headers=headers).status_code == 404
    assert httpx.get(f"{server.url}/v1/nothing", headers=headers).json()["error"]["message"]


def test_conversation_survives_kill_9_in_the_middle_of_a_streamed_answer(server, setup):
    """Runs last: it kills the module's server (a restart costs a process start, so there is one)."""
    client = server.client()
    first = _ask(client, "The pass key is 12345. Remember it.", extra_body={"conversation_id": "long"})
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "I am the life of the party."}],
        max_tokens=600,
        temperature=0,
        stream=True,
        extra_body={"conversation_id": "long"},
    )
    next(iter(stream))  # the answer has started
    server.kill()
    folder = setup / "state" / "conversations" / "long"
    manifest = read_manifest(folder)  # readable: never torn
    load_file(str(folder / manifest["tensors"]))
    restarted = Server(setup, "--api-keys", str(setup / "keys.json"), "--state", str(setup / "state"))
    try:
        headers = {"Authorization": "Bearer root-key"}
        held = httpx.get(f"{restarted.url}/v1/conversations/long", headers=headers).json()
        assert held["turns"] in (1, 2)  # the interrupted turn is wholly there or wholly absent
        assert held["messages"][:2] == [
            {"role": "user", "content": "The pass key is 12345. Remember it."},
            {"role": "assistant", "content": first.choices[0].message.content},
        ]
        assert len(held["messages"]) == 2 * held["turns"]
        after = _ask(restarted.client(), "Remember it.", extra_body={"conversation_id": "long"})
        # only the new turn was fed (fewer tokens than the first message alone): the history came from disk
        assert after.usage.prompt_tokens < first.usage.prompt_tokens
        again = httpx.get(f"{restarted.url}/v1/conversations/long", headers=headers).json()
        assert again["turns"] == held["turns"] + 1
    finally:
        restarted.stop()
