"""LongBench / InfiniteBench loaders on small fixture files written here with the official field names."""

from __future__ import annotations

import json

import pytest

from memalign.bench.metrics import score_prediction
from memalign.bench.prompts import encode
from memalign.bench.tasks import TaskContext, get_task
from memalign.errors import ConfigError, DataError
from memalign.testing import tiny_tokenizer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def longbench_dir(tmp_path):
    base = {"length": 100, "language": "en", "all_classes": None, "dataset": ""}
    write_jsonl(
        tmp_path / "hotpotqa.jsonl",
        [
            {**base, "_id": "h1", "input": "Who wrote it?", "context": "Passage 1: Ann wrote it.", "answers": ["Ann"]},
            {**base, "_id": "h2", "input": "Where?", "context": "Passage 1: in Rome.", "answers": ["Rome"]},
        ],
    )
    write_jsonl(
        tmp_path / "trec.jsonl",
        [
            {
                **base,
                "_id": "t1",
                "input": "Question: What is a cat?\nType:",
                "context": "Question: Who? Type: Human",
                "answers": ["Animal"],
                "all_classes": ["Animal", "Human", "Food"],
            },
        ],
    )
    (tmp_path / "data").mkdir()
    write_jsonl(
        tmp_path / "data" / "samsum.jsonl",
        [
            {
                **base,
                "_id": "s1",
                "input": "Dialogue: A: hi\nSummary: ",
                "context": "Dialogue: B: yo\nSummary: B greets.",
                "answers": ["A says hi."],
            },
        ],
    )
    return tmp_path


def test_longbench_prompt_is_the_official_template(longbench_dir):
    ctx = TaskContext(tiny_tokenizer(), data_dir=longbench_dir)
    records = get_task("longbench:hotpotqa").records(ctx, 0, 0, seed=0)
    assert [r.id for r in records] == ["h1", "h2"]
    first = records[0]
    assert first.context.startswith("Answer the question based on the given passages.")
    assert first.context.endswith("The following are given passages.\nPassage 1: Ann wrote it.")
    assert first.question.endswith("\n\nQuestion: Who wrote it?\nAnswer:")
    assert (first.max_new_tokens, first.metric, first.chat_template) == (32, "qa_f1", True)
    assert len(get_task("longbench:hotpotqa").records(ctx, 0, 1, seed=0)) == 1


def test_longbench_raw_tasks_first_line_and_stop(longbench_dir):
    ctx = TaskContext(tiny_tokenizer(), data_dir=longbench_dir)
    trec = get_task("longbench:trec").records(ctx, 0, 0, seed=0)[0]
    assert not trec.chat_template and trec.meta["first_line"] and trec.metric == "classification"
    assert score_prediction(trec.metric, "Animal\nHuman", trec.answer, trec.meta) == 1.0
    text = tiny_tokenizer().decode(encode(tiny_tokenizer(), trec).input_ids)
    assert text.startswith("Please determine the type of the question below.") and "<|im_start|>" not in text
    samsum = get_task("longbench:samsum").records(ctx, 0, 0, seed=0)[0]  # found under data/
    assert samsum.stop == ["\n"] and samsum.max_new_tokens == 128 and samsum.metric == "rouge_l"


def test_longbench_errors_name_the_missing_file(tmp_path):
    ctx = TaskContext(tiny_tokenizer(), data_dir=tmp_path)
    with pytest.raises(DataError, match="qasper.jsonl not found.*THUDM/LongBench"):
        get_task("longbench:qasper").records(ctx, 0, 0, seed=0)
    with pytest.raises(ConfigError, match="--data-dir"):
        get_task("longbench:qasper").records(TaskContext(tiny_tokenizer()), 0, 0, seed=0)
    write_jsonl(tmp_path / "qasper.jsonl", [{"input": "q", "answers": ["a"]}])
    with pytest.raises(DataError, match="lacks field"):
        get_task("longbench:qasper").records(ctx, 0, 0, seed=0)


@pytest.fixture
def infinitebench_dir(tmp_path):
    key = "5c3e2f4a-0000-4000-8000-000000000001"
    write_jsonl(
        tmp_path / "kv_retrieval.jsonl",
        [
            {
                "id": 0,
                "context": 'JSON data:\n{"' + key + '": "v-1"}',
                "input": f'Key: "{key}"\nThe value associated with the specified key is: ',
                "answer": ["v-1"],
                "options": [],
            }
        ],
    )
    write_jsonl(
        tmp_path / "math_find.jsonl",
        [
            {
                "id": 0,
                "context": "[3, 9, 1]",
                "input": "The largest number of the list is: ",
                "answer": [9],
                "options": [],
            }
        ],
    )
    write_jsonl(
        tmp_path / "longbook_choice_eng.jsonl",
        [{"id": 0, "context": "A book.", "input": "Who?", "answer": ["Bob"], "options": ["Ann", "Bob", "Cy", "Di"]}],
    )
    write_jsonl(
        tmp_path / "code_debug.jsonl",
        [{"id": 0, "context": "def f(): pass", "input": "", "answer": "g", "options": ["f", "g", "h", "i"]}],
    )
    write_jsonl(
        tmp_path / "passkey.jsonl",
        [
            {
                "id": 0,
                "context": "noise The pass key is 12345. noise",
                "input": "What is the pass key?",
                "answer": ["12345"],
                "options": [],
            }
        ],
    )
    return tmp_path, key


def test_infinitebench_prompts_and_answers(infinitebench_dir):
    folder, key = infinitebench_dir
    ctx = TaskContext(tiny_tokenizer(), data_dir=folder)
    kv = get_task("infinitebench:kv_retrieval").records(ctx, 0, 0, seed=0)[0]
    assert kv.context.startswith(f'Extract the value corresponding to the specified key "{key}" in the JSON')
    assert kv.max_new_tokens == 100 and score_prediction(kv.metric, 'It is "v-1".', kv.answer, kv.meta) == 1.0
    math = get_task("infinitebench:math_find").records(ctx, 0, 0, seed=0)[0]
    assert math.context.startswith("What is the largest number in the following list?\n\n[3, 9, 1]")
    assert score_prediction(math.metric, "9", math.answer, math.meta) == 1.0
    choice = get_task("infinitebench:longbook_choice_eng").records(ctx, 0, 0, seed=0)[0]
    assert choice.answer == ["Bob", "B"] and "\nB. Bob\n" in choice.question
    assert score_prediction(choice.metric, "B", choice.answer, choice.meta) == 1.0
    debug = get_task("infinitebench:code_debug").records(ctx, 0, 0, seed=0)[0]
    assert debug.answer == ["g", "B"] and score_prediction(debug.metric, "B.", debug.answer, debug.meta) == 1.0
    passkey = get_task("infinitebench:passkey").records(ctx, 0, 0, seed=0)[0]
    assert passkey.question == "\n\nWhat is the pass key?" and passkey.metric == "first_int_match"
