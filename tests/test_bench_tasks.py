"""Synthetic generators: calibrated to the tokenizer, seeded, answers really hidden in the context."""

from __future__ import annotations

import pytest
from conftest import shared_data

from memalign.bench.prompts import count_tokens, encode, truncate_middle
from memalign.bench.records import Record, read_records, write_records
from memalign.bench.tasks import TaskContext, get_task, list_tasks
from memalign.bench.tasks.base import spread_depths
from memalign.errors import ConfigError, DataError
from memalign.testing import tiny_tokenizer

LENGTH = {"vt": 2500, "cwe": 3000, "fwe": 2000}  # the tiny byte-level tokenizer makes prompts long
SYNTHETIC = [name for name, task in list_tasks().items() if task.synthetic]
ESSAY = (
    "Startups grow fast. Most founders underestimate how long things take! Good ideas look bad at first. "
    "Users tell you what matters? Writing clarifies thinking. The best way to learn is to build something. "
)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def haystack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("essays")
    for i in range(3):
        (folder / f"essay{i}.txt").write_text(ESSAY * (5 + i))
    return folder


@pytest.mark.parametrize("name", SYNTHETIC)
def test_every_synthetic_task_fits_its_length_and_hides_the_answer(name, tok, haystack):
    ctx = TaskContext(tok, haystack_dir=haystack)
    length = LENGTH.get(name, 1200)
    records = get_task(name).records(ctx, length, 2, seed=3)
    assert len(records) == 2 * (5 if name == "niah" else 1)
    for record in records:
        size = count_tokens(tok, record) + record.max_new_tokens
        assert size <= length, f"{name}: {size} > {length}"
        assert size > length * 0.6, f"{name}: {size} tokens is far below the target {length}"
        assert record.task == name and record.id
        if name not in ("cwe", "fwe"):  # aggregation tasks: the answers are frequent words, not needles
            for gold in record.answer:
                assert str(gold) in record.context or "Dolores" in record.context
    again = get_task(name).records(ctx, length, 2, seed=3)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in records]  # seeded


@pytest.mark.parametrize("name", ["passkey", "niah_single_1", "vt", "niah_multikey_2", "ib_kv_retrieval"])
def test_sample_i_does_not_depend_on_n_or_length(name, tok):
    ctx = TaskContext(tok)
    base = LENGTH.get(name, 800)
    one = get_task(name).records(ctx, base, 1, seed=0)[0]
    three = get_task(name).records(ctx, base, 3, seed=0)
    longer = get_task(name).records(ctx, 2 * base, 1, seed=0)[0]
    assert one.to_dict() == three[0].to_dict()  # the runner resumes by id: sample i must not move
    assert one.answer == longer.answer  # same content, more filler
    assert count_tokens(tok, longer) > count_tokens(tok, one) + 300
    assert len({tuple(r.answer) for r in three}) == 3  # different samples differ


def test_ruler_templates_and_singular_rewrite(tok):
    single = get_task("niah_single_1").records(TaskContext(tok), 600, 1, seed=0)[0]
    assert single.context.startswith("A special magic number is hidden within the following text.")
    assert single.question.startswith("What is the special magic number for ")
    assert single.answer_prefix.endswith("mentioned in the provided text is")
    assert single.max_new_tokens == 128 and single.metric == "string_match_all"
    assert f"is: {single.answer[0]}." in single.context
    # the needle's recorded depth is where it is: the fraction of the filler (sentences) before it
    long = get_task("niah_single_1").records(TaskContext(tok), 4000, 1, seed=0)[0]
    (depth,) = long.meta["needle_depths"]
    body = long.context.split("following text.")[1]
    assert abs(body.index(f"is: {long.answer[0]}.") / len(body) - depth) < 0.05
    vt = get_task("vt").records(TaskContext(tok), 2500, 1, seed=0)[0]
    assert len(vt.answer) == 5 and all(f"VAR {v} =" in vt.context for v in vt.answer)
    assert len(vt.meta["hop_depths"]) == 5
    assert "5 variables are assgined the value" in vt.answer_prefix  # RULER's spelling


def test_cwe_and_fwe_gold_are_the_most_frequent(tok):
    cwe = get_task("cwe").records(TaskContext(tok), 3000, 1, seed=0)[0]
    listed = cwe.context.split("most often.\n")[-1]
    words = [w for w in listed.split() if not w.rstrip(".").isdigit()]
    counts = {w: words.count(w) for w in set(words)}
    top = sorted(counts, key=counts.get, reverse=True)[:10]
    assert set(top) == set(cwe.answer)
    fwe = get_task("fwe").records(TaskContext(tok), 2000, 1, seed=0)[0]
    coded = fwe.context.split("coded words. ")[1].split()
    ranking = sorted(set(coded), key=coded.count, reverse=True)
    assert ranking[0] == "..." and ranking[1:4] == fwe.answer


def test_needle_depth_grid(tok, haystack):
    ctx = TaskContext(tok, haystack_dir=haystack, depths=(0.0, 1.0))
    first, last = get_task("niah").records(ctx, 900, 1, seed=0)
    assert first.meta["depth"] == 0.0 and last.meta["depth"] == 1.0
    body = first.context.removeprefix("<document>\n")
    assert body.startswith("The best thing to do in San Francisco")
    assert last.context.rstrip().removesuffix("</document>").rstrip().endswith("sunny day.")
    passkeys = get_task("passkey").records(TaskContext(tok, depths=(0.0, 0.5)), 800, 2, seed=0)
    assert [r.meta["depth"] for r in passkeys] == [0.0, 0.5, 0.0, 0.5]  # the grid cycles: n never moves sample i
    assert spread_depths(TaskContext(tok), 7) == [0.5, 0.0, 1.0, 0.25, 0.75, 0.125, 0.625]


def test_errors_say_what_to_do(tok):
    with pytest.raises(ConfigError, match="--haystack"):
        get_task("niah_single_2").records(TaskContext(tok), 800, 1, seed=0)
    with pytest.raises(DataError, match="target length"):
        get_task("vt").records(TaskContext(tok), 100, 1, seed=0)
    with pytest.raises(ConfigError, match="unknown task"):
        get_task("nope")
    with pytest.raises(ConfigError):
        TaskContext(tok, depths=(1.5,))


def test_prompt_encoding_split_and_truncation(tok):
    record = Record(
        context="lots of context " * 20,
        question="What?",
        answer_prefix="Answer:",
        answer=["x"],
        max_new_tokens=4,
        task="t",
        metric="string_match_all",
    )
    prompt = encode(tok, record)
    text = tok.decode(prompt.input_ids)
    assert text.startswith("<|im_start|>user\nlots of context") and text.endswith("<|im_start|>assistant\nAnswer:")
    assert "What?" not in tok.decode(prompt.input_ids[: prompt.context_len])
    assert "What?" in tok.decode(prompt.input_ids[prompt.context_len - 1 :])
    cut = truncate_middle(prompt, 40)
    assert len(cut) == 40 and cut.input_ids[:20] == prompt.input_ids[:20]
    assert cut.input_ids[-20:] == prompt.input_ids[-20:]
    raw = encode(
        tok,
        Record(
            context="ctx ",
            question="Q?",
            answer_prefix="A:",
            answer=["x"],
            max_new_tokens=1,
            task="t",
            metric="qa_f1",
            chat_template=False,
        ),
    )
    assert tok.decode(raw.input_ids) == "ctx Q? A:"  # raw prompts: question and prefix joined by one space


def test_records_round_trip(tmp_path, tok):
    records = get_task("passkey").records(TaskContext(tok), 800, 2, seed=0)
    path = write_records(tmp_path / "r.jsonl", records, [{"input_ids": [1, 2]}] * 2)
    assert read_records(path) == records


def test_paul_graham_haystack_real_text():
    folder = shared_data("haystack", "paul_graham")
    ctx = TaskContext(tiny_tokenizer(), haystack_dir=folder)
    record = get_task("niah_single_2").records(ctx, 2000, 1, seed=0)[0]
    assert "special magic number" in record.context and record.answer[0] in record.context


def test_task_registry_lists_known_names_and_refuses_duplicates():
    from memalign.bench import TASKS
    from memalign.bench.tasks.base import add_task, register_task
    from memalign.errors import DuplicateNameError, UnknownNameError
    from memalign.registry import Registry

    assert isinstance(TASKS, Registry) and "ib_passkey" in list_tasks() and "niah_multikey_3" in TASKS
    with pytest.raises(UnknownNameError, match=r"unknown task 'nope'; known: .*passkey.*memalign bench tasks"):
        get_task("nope")
    with pytest.raises(DuplicateNameError, match="'passkey' is already registered"):
        register_task(type("Again", (get_task("passkey").__class__,), {}))
    with pytest.raises(DuplicateNameError, match="'niah_single_1'"):
        add_task(get_task("niah_single_1"))
    assert get_task("passkey") is TASKS["passkey"]  # the first registration stays


def test_cwe_refuses_a_length_its_word_pool_cannot_fill(tok, monkeypatch):
    import memalign.bench.tasks.ruler as ruler

    monkeypatch.setattr(ruler, "vocabulary_words", lambda tokenizer: [f"w{i:03d}" for i in range(60)])
    with pytest.raises(ConfigError, match=r"word pool \(60 words.*too small for 3000 tokens"):
        get_task("cwe").records(TaskContext(tok), 3000, 1, seed=0)
