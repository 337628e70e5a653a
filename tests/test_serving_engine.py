"""The serving engine without HTTP: batched rows equal rows alone, conversations feed only new tokens and
survive a restart, limits and ownership are enforced."""

from __future__ import annotations

import pytest
from test_serving_steering import random_steering

from memalign.errors import ConflictError, NotFoundError, RequestError
from memalign.memory import EMConfig
from memalign.serving import Engine, EngineLimits, GenerationRequest, SamplingParams
from memalign.serving.sampling import StopText
from memalign.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = EMConfig(n_init=4, n_local=48, n_mem=32, chunk_size=16, min_block_size=4, max_block_size=16)
GREEDY = SamplingParams(max_tokens=8, temperature=0.0)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    model = tiny_model("qwen3")
    return model, tiny_tokenizer(), {"ann": random_steering(model, 1), "bob": random_steering(model, 2)}


def _engine(model_and_tokenizer, state_dir=None, **kwargs) -> Engine:
    model, tokenizer, personas = model_and_tokenizer
    return Engine(model, tokenizer, memory=CFG, personas=personas, state_dir=state_dir, model_name="tiny", **kwargs)


def test_a_batch_of_rows_with_their_own_personas_equals_each_alone(model_and_tokenizer):
    requests = [
        GenerationRequest(_user("The quick brown fox."), GREEDY, persona="ann"),
        GenerationRequest(_user("I worry about things."), GREEDY, persona="bob", conversation_id="c1"),
        GenerationRequest(_user("The pass key is 12345."), GREEDY),
        GenerationRequest(_user("The quick brown fox."), SamplingParams(max_tokens=6, seed=7), persona="bob"),
    ]
    with _engine(model_and_tokenizer) as engine:
        alone = [engine.generate(r) for r in requests]
        engine.delete_conversation("c1")
        steps = engine.steps
        jobs = [engine.submit(r) for r in requests]
        together = [job.result() for job in jobs]
        batched_steps = engine.steps - steps
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.completion_tokens for c in together] == [8, 8, 8, 6]
    assert batched_steps < sum(c.completion_tokens - 1 for c in together)  # rows shared decode steps
    assert len({c.text for c in alone[:2]}) == 2 and alone[0].text != alone[2].text


def test_conversation_feeds_only_new_tokens_and_continues_after_a_restart(model_and_tokenizer, tmp_path):
    turns = ["The pass key is 12345. Remember it.", "I am the life of the party.", "What is the pass key?"]
    with _engine(model_and_tokenizer) as engine:  # never restarted
        reference = [engine.generate(GenerationRequest(_user(t), GREEDY, conversation_id="c")) for t in turns]
        held = engine.conversation("c")
    assert held["turns"] == 3 and [m["role"] for m in held["messages"]] == ["user", "assistant"] * 3
    assert held["tokens_held"] > CFG.n_local  # the history left the window: memory holds it as events
    assert reference[1].prompt_tokens < 25  # turn 2 fed its own tokens, not the history again

    with _engine(model_and_tokenizer, state_dir=tmp_path) as engine:
        first = engine.generate(GenerationRequest(_user(turns[0]), GREEDY, conversation_id="c"))
        # the client resends the whole history: only the new message is fed
        history = _user(turns[0]) + [{"role": "assistant", "content": first.text}] + _user(turns[1])
        second = engine.generate(GenerationRequest(history, GREEDY, conversation_id="c"))
    assert [first.text, second.text] == [reference[0].text, reference[1].text]
    assert second.prompt_tokens == reference[1].prompt_tokens
    with _engine(model_and_tokenizer, state_dir=tmp_path) as engine:
        assert engine.conversation("c")["turns"] == 2 and not engine.conversation("c")["in_memory"]
        third = engine.generate(GenerationRequest(_user(turns[2]), GREEDY, conversation_id="c"))
        assert engine.conversation("c")["turns"] == 3
    assert third.text == reference[2].text


def test_conversations_are_private_and_cannot_be_rewritten(model_and_tokenizer):
    with _engine(model_and_tokenizer) as engine:
        engine.generate(GenerationRequest(_user("Remember it."), GREEDY, conversation_id="k", api_key="alice"))
        with pytest.raises(NotFoundError):
            engine.conversation("k", api_key="bob")
        with pytest.raises(NotFoundError):
            engine.submit(GenerationRequest(_user("hi"), GREEDY, conversation_id="k", api_key="bob"))
        edited = _user("Remember it.") + [{"role": "assistant", "content": "something else"}] + _user("and?")
        with pytest.raises(ConflictError, match="at message 1"):
            engine.submit(GenerationRequest(edited, GREEDY, conversation_id="k", api_key="alice"))
        engine.delete_conversation("k", api_key="alice")
        with pytest.raises(NotFoundError):
            engine.conversation("k", api_key="alice")
        with pytest.raises(RequestError, match="conversation_id"):
            engine.submit(GenerationRequest(_user("hi"), GREEDY, conversation_id="../etc"))


def test_limits_and_bad_requests_are_refused_with_the_field(model_and_tokenizer):
    limits = EngineLimits(max_new_tokens=16, max_prompt_tokens=40)
    with _engine(model_and_tokenizer, limits=limits) as engine:
        cases = [
            (GenerationRequest([], GREEDY), "messages"),
            (GenerationRequest(_user("hi"), SamplingParams(max_tokens=17)), "max_tokens"),
            (GenerationRequest(_user("hi"), GREEDY, persona="zed"), "persona"),
            (GenerationRequest([{"role": "robot", "content": "hi"}], GREEDY), "messages[0]"),
        ]
        for request, param in cases:
            with pytest.raises(RequestError) as info:
                engine.submit(request)
            assert info.value.param == param
        with pytest.raises(RequestError, match="limit of 40"):  # found at prefill, raised from the result
            engine.generate(GenerationRequest(_user("The quick brown fox jumps over the lazy dog. " * 5), GREEDY))
        assert engine.generate(GenerationRequest(_user("hi"), GREEDY)).completion_tokens == 8  # still serving
    with pytest.raises(RequestError, match="temperature"):
        SamplingParams(temperature=3.0)


def test_stop_strings_end_the_answer_and_are_never_streamed():
    stop = StopText(("END",))
    assert stop.update("abc E") == "abc "  # "E" may start "END": held back
    assert stop.update("abc EN") == ""
    assert stop.update("abc ENDxyz") == "" and stop.stopped and stop.text == "abc "
    free = StopText(())
    assert free.update("caf\ufffd") == "caf" and free.update("café") == "é"
