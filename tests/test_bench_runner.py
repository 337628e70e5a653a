"""Methods, runner (result folders, resume), report and CLI on tiny random models."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from memalign.bench.methods import METHODS, Budget, FullAttention, MemoryMethod, make_method
from memalign.bench.needle import answer_attended, answer_token_spans, covered
from memalign.bench.prompts import EncodedPrompt, encode
from memalign.bench.report import score_cell, score_tables, write_plots
from memalign.bench.results import collect
from memalign.bench.runner import RunConfig, predict_one, run_records
from memalign.bench.tasks import TaskContext, get_task
from memalign.cli import app
from memalign.cli.bench import parse_lengths
from memalign.errors import ConfigError
from memalign.reporting import markdown_document
from memalign.testing import tiny_model, tiny_tokenizer


def _em_available() -> bool:
    import memalign.memory as memory

    return hasattr(memory, "EpisodicMemory") and hasattr(memory, "EMConfig")


needs_em = pytest.mark.skipif(not _em_available(), reason="EM engine not available (memalign.memory)")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama"), tiny_tokenizer()


@pytest.mark.parametrize("chunk", [7, 64, 4096])
def test_full_attention_equals_model_generate(tiny, chunk):
    model, _ = tiny
    ids = torch.randint(5, 500, (1, 150), generator=torch.Generator().manual_seed(0))
    ours = FullAttention(prefill_chunk=chunk).generate(model, ids, 12, stop_ids=set())
    ref = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False, min_new_tokens=12, pad_token_id=0
    )[0, ids.shape[1] :].tolist()
    assert ours == ref


def test_full_attention_stops_at_stop_token(tiny):
    model, _ = tiny
    ids = torch.randint(5, 500, (1, 40), generator=torch.Generator().manual_seed(1))
    free = FullAttention().generate(model, ids, 8, stop_ids=set())
    stopped = FullAttention().generate(model, ids, 8, stop_ids={free[3]})
    assert stopped == free[: free.index(free[3])]


def _argmax_loop(model, ids, n):
    """Greedy decoding by hand: the whole sequence through the model each step, no cache, no processors."""
    seq = ids
    for _ in range(n):
        token = model(input_ids=seq).logits[0, -1].argmax()
        seq = torch.cat([seq, token.view(1, 1)], dim=1)
    return seq[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("kind", ["llama", "gemma3_text"])
def test_full_attention_is_plain_greedy_whatever_the_checkpoint_asks(kind):
    """A checkpoint's generation_config (repetition penalty, banned n-grams, suppressed tokens, an EOS that
    would stop early) must not change the baseline: it stays the argmax of the model, and the model's
    generation config is given back unchanged."""
    from transformers import GenerationConfig

    model = tiny_model(kind)
    ids = torch.randint(5, 500, (1, 60), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = _argmax_loop(model, ids, 8)
    own = GenerationConfig(
        repetition_penalty=3.0,
        no_repeat_ngram_size=1,
        suppress_tokens=reference[:2],
        eos_token_id=reference[3],
        min_new_tokens=2,
        bos_token_id=1,
        pad_token_id=0,
    )
    model.generation_config = own
    assert FullAttention(prefill_chunk=16).generate(model, ids, 8, stop_ids=set()) == reference
    assert model.generation_config is own and model.generation_config.repetition_penalty == 3.0


def test_method_registry_refuses_unknown_and_duplicate_names():
    from memalign.bench.methods import register_method
    from memalign.errors import DuplicateNameError, UnknownNameError

    with pytest.raises(UnknownNameError, match="known: full, streaming"):
        make_method("magic", Budget())
    before = list(METHODS)
    with pytest.raises(DuplicateNameError):
        register_method("full", "a second full")(lambda budget: FullAttention())
    assert list(METHODS) == before and METHODS["full"].description.startswith("unmodified model")


class _Raises:
    name, last_attended = "raises", None

    def __init__(self, exc):
        self.exc = exc

    def generate(self, model, input_ids, max_new_tokens, stop_ids):
        raise self.exc


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
        RuntimeError(
            "[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes. out of memory"
        ),
        MemoryError(),
        ConfigError("this prompt is refused"),
    ],
)
def test_an_item_that_runs_out_of_memory_or_is_refused_counts_as_failed(tiny, exc):
    model, tok = tiny
    record, _ = _passkey(tok)
    row = predict_one(model, tok, _Raises(exc), record)
    assert row["score"] == 0.0 and row["prediction"] == "" and row["error"].startswith(type(exc).__name__)


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch: a bug"), IndexError("a bug"), TypeError("a bug")])
def test_a_bug_inside_a_method_stops_the_run(tiny, exc):
    model, tok = tiny
    record, _ = _passkey(tok)
    with pytest.raises(type(exc), match="a bug"):
        predict_one(model, tok, _Raises(exc), record)


def test_budget_and_method_configs():
    budget = Budget(n_init=16, n_local=256, n_mem=128, chunk_size=64)
    assert budget.total == 400 and budget.tag() == "i16-l256-m128-c64-lt"
    # The chunked-last-token driver keeps the folder name it always had; the default gets its own.
    joint = Budget(n_init=16, n_local=256, n_mem=128, chunk_size=64, last_token_alone=False)
    assert joint.tag() == "i16-l256-m128-c64" and make_method("em-llm", joint).em_config().last_token_alone is False
    streaming = make_method("streaming", budget)
    assert isinstance(streaming, MemoryMethod)
    assert streaming.em_fields()["n_mem"] == 0 and streaming.em_fields()["n_local"] == 384  # equal total budget
    assert make_method("infllm", budget).em_fields()["segmentation"] == "uniform"
    assert make_method("em-llm+refine+contiguity", budget).em_fields()["refinement"] == "modularity"
    for name in METHODS:
        if name != "full":  # every memory method spends exactly the same budget
            fields = make_method(name, budget).em_fields()
            assert fields["n_init"] + fields["n_local"] + fields["n_mem"] == budget.total
    with pytest.raises(ConfigError, match="chunk_size"):
        Budget(n_local=100, chunk_size=512)
    near = Budget(n_init=16, n_local=256, n_mem=128, chunk_size=64, memory_distance=32)
    assert near.tag() == "i16-l256-m128-c64-d32-lt"  # its own result folder
    assert make_method("em-llm", near).em_config().memory_distance == 32
    assert make_method("em-llm", budget).em_config().memory_distance == 255  # EM-LLM's n_local - 1
    with pytest.raises(ConfigError, match="memory_distance"):
        Budget(memory_distance=-1)
    with pytest.raises(ConfigError, match="unknown method"):
        make_method("magic", budget)


@needs_em
@pytest.mark.parametrize("name", [m for m in METHODS if m != "full"])
def test_memory_methods_build_valid_engine_configs(name):
    make_method(name, Budget(n_init=16, n_local=256, n_mem=128, chunk_size=64)).em_config()


@needs_em
def test_memory_method_without_eviction_matches_full(tiny):
    model, _ = tiny
    ids = torch.randint(5, 500, (1, 200), generator=torch.Generator().manual_seed(2))
    full = FullAttention().generate(model, ids, 6, stop_ids=set())
    em = make_method("em-llm", Budget(n_init=16, n_local=1024, n_mem=128, chunk_size=64)).generate(
        model, ids, 6, stop_ids=set()
    )
    assert em == full  # n_local >= length: nothing evicted, the engine must reproduce the model


def test_run_records_writes_resumes_and_reports(tiny, tmp_path):
    model, tok = tiny
    cfg = RunConfig("passkey", 600, "full", "tiny:llama", samples=3, dtype="fp32")
    records = get_task("passkey").records(TaskContext(tok), 600, 3, seed=0)
    first = run_records(cfg, records[:2], model, tok, tmp_path)
    folder = tmp_path / cfg.name()
    assert cfg.name() == "passkey__600__tiny-llama__full__fp32__seed0"  # the dtype used is part of the name
    assert first["n"] == 2 and first["n_failed"] == 0 and first["score"] is not None
    assert set(first["by_depth"]) == {"0.000", "0.500"}
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["task"] == "passkey" and config["method_config"]["name"] == "full"
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [records[0].id, records[1].id]
    assert all({"prediction", "answer", "score", "prompt_tokens", "seconds", "cpu_seconds"} <= set(r) for r in rows)
    assert all(r["cpu_seconds"] > 0 for r in rows) and first["mean_cpu_seconds"] > 0
    # resume: only the missing third item is computed
    second = run_records(cfg, records, model, tok, tmp_path)
    assert second["n"] == 3 and len((folder / "predictions.jsonl").read_text().splitlines()) == 3
    # a complete folder is skipped without touching it
    mtime = (folder / "predictions.jsonl").stat().st_mtime_ns
    run_records(cfg, records, model, tok, tmp_path)
    assert (folder / "predictions.jsonl").stat().st_mtime_ns == mtime
    results = collect([tmp_path])
    assert [name for name, _ in results] == [cfg.name()]
    markdown = markdown_document(score_tables(results))
    assert "| full | 0.0 (3) |" in markdown or "| full |" in markdown
    plots = write_plots(results, tmp_path / "plots")
    assert any(p.name.endswith("__length.png") for p in plots) and any("depth" in p.name for p in plots)
    assert all(p.stat().st_size > 1000 for p in plots)


def test_run_config_names_and_validation():
    mem = RunConfig("vt", 8192, "em-llm", "/models/Qwen3-8B", budget=Budget(n_local=2048, n_mem=1024), dtype="bf16")
    assert mem.name() == "vt__8192__Qwen3-8B__em-llm__i128-l2048-m1024-c512-lt__bf16__seed0"
    with pytest.raises(ConfigError):
        RunConfig("passkey", 0, "full", "m")
    with pytest.raises(ConfigError):
        RunConfig("passkey", 4096, "full", "m", samples=0)
    assert parse_lengths("4k, 8K,100") == [4096, 8192, 100]
    with pytest.raises(ConfigError):
        parse_lengths("4m")


def test_cli_run_report_and_listing(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "bench",
            "run",
            "-t",
            "niah_single_1",
            "--lengths",
            "600",
            "-m",
            "full",
            "--model",
            "tiny:qwen2",
            "--samples",
            "1",
            "--dtype",
            "fp32",
            "--out",
            str(tmp_path / "res"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "res" / "niah_single_1__600__tiny-qwen2__full__fp32__seed0" / "metrics.json").is_file()
    report = runner.invoke(app, ["bench", "report", str(tmp_path / "res"), "--markdown", str(tmp_path / "t.md")])
    assert report.exit_code == 0, report.output
    assert "niah_single_1" in (tmp_path / "t.md").read_text()
    assert (tmp_path / "res" / "plots").is_dir()
    small = ["--n-init", "16", "--n-local", "128", "--n-mem", "128", "--chunk-size", "64"]
    chunked = runner.invoke(
        app,
        [
            "bench",
            "run",
            "-t",
            "niah_single_1",
            "--lengths",
            "600",
            "-m",
            "em-llm",
            "--model",
            "tiny:qwen2",
            "--samples",
            "1",
            *small,
            "--last-token-in-chunk",
            "--dtype",
            "fp32",
            "--out",
            str(tmp_path / "res"),
        ],
    )
    assert chunked.exit_code == 0, chunked.output
    folder = tmp_path / "res" / "niah_single_1__600__tiny-qwen2__em-llm__i16-l128-m128-c64__fp32__seed0"
    assert json.loads((folder / "metrics.json").read_text())["config"]["budget"]["last_token_alone"] is False
    # The summary grid: `em-llm` alone names the default driver's runs, so the chunked run stays out.
    summary = runner.invoke(
        app,
        ["bench", "report", str(tmp_path / "res"), "--summary", "full,em-llm", "--markdown", str(tmp_path / "s.md")],
    )
    assert summary.exit_code == 0, summary.output
    assert "| niah_single_1 | full |" in (tmp_path / "s.md").read_text()
    assert "| niah_single_1 | em-llm |" not in (tmp_path / "s.md").read_text()
    missing = runner.invoke(app, ["bench", "report", str(tmp_path / "res"), "--summary", "infllm"])
    assert missing.exit_code != 0 and "no results of those methods" in str(missing.exception)
    listing = runner.invoke(app, ["bench", "tasks"])
    assert listing.exit_code == 0 and "niah_multikey_3" in listing.output and "longbench" in listing.output
    assert "em-llm+refine" in runner.invoke(app, ["bench", "methods"]).output
    export = runner.invoke(
        app,
        [
            "bench",
            "generate",
            "-t",
            "passkey",
            "--lengths",
            "600",
            "--model",
            "tiny:llama",
            "--samples",
            "2",
            "--out",
            str(tmp_path / "r.jsonl"),
        ],
    )
    assert export.exit_code == 0, export.output
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and 0 < rows[0]["context_len"] < len(rows[0]["input_ids"]) <= 600


def _passkey(tok, length=600, index=1):
    record = get_task("passkey").records(TaskContext(tok), length, 3, seed=0)[index]
    return record, encode(tok, record)


def test_answer_token_spans_point_at_the_answer(tiny):
    _, tok = tiny
    record, prompt = _passkey(tok)
    spans = answer_token_spans(tok, record, prompt)
    assert spans is not None and len(spans) == 1 and spans[0]
    for a, b in spans[0]:
        assert a < b <= prompt.context_len
        assert record.answer[0] in tok.decode(prompt.input_ids[a:b])
    assert answer_token_spans(tok, replace(record, answer=["not in the text"]), prompt) is None
    truncated = EncodedPrompt(prompt.input_ids[:100] + prompt.input_ids[-100:], 100)
    assert answer_token_spans(tok, record, truncated) is None


def test_answer_attended_counts_layers_that_see_every_answer():
    assert covered((5, 8), [(0, 3), (4, 9)]) and not covered((5, 8), [(0, 6), (7, 9)])
    answers = [[(10, 12), (50, 52)], [(30, 31)]]
    assert answer_attended(answers, [[(0, 100)], [(45, 60)], [(0, 11), (28, 55)]]) == pytest.approx(2 / 3)
    assert answer_attended(answers, []) is None


@needs_em
@pytest.mark.parametrize(
    ("method", "n_local", "n_mem", "expected"),
    [
        ("em-llm", 1024, 128, 1.0),  # everything in the window
        ("em-llm", 64, 1024, 1.0),  # everything evicted, and the retrieval budget holds every event
        ("infllm", 64, 1024, 1.0),
        ("streaming", 64, 0, 0.0),  # the needle (mid-context) left the window and nothing retrieves it
    ],
)
def test_runner_records_whether_the_answer_was_attended(tiny, tmp_path, method, n_local, n_mem, expected):
    model, tok = tiny
    record, prompt = _passkey(tok)
    assert len(prompt) > 2 * (16 + n_local) or n_local > len(prompt)
    budget = Budget(n_init=16, n_local=n_local, n_mem=n_mem, chunk_size=32)
    row = predict_one(model, tok, make_method(method, budget), record)
    assert row["answer_attended"] == pytest.approx(expected)


def test_report_keeps_bracketed_notes_and_separates_memory_distances():
    import io

    from rich.console import Console

    from memalign.bench.results import method_label
    from memalign.cli.tables import print_tables

    screen = io.StringIO()

    budget = {"n_init": 128, "n_local": 2048, "n_mem": 1024, "last_token_alone": True}
    config = {"method": "em-llm", "task": "passkey", "model": "m", "length": 8192, "method_config": {"budget": budget}}
    near = {**config, "method_config": {"budget": {**budget, "memory_distance": 512}}}
    assert method_label(config) == "em-llm (3200)" and method_label(near) == "em-llm (3200, distance 512)"
    # Results written before the driver fed the last prompt token alone carry no flag: labelled apart.
    older = {**config, "method_config": {"budget": {k: v for k, v in budget.items() if k != "last_token_alone"}}}
    assert method_label(older) == "em-llm (3200, last token in chunk)"
    peer = {**config, "method": "kvpress-snapkv", "method_config": older["method_config"]}
    assert method_label(peer) == "kvpress-snapkv (3200)"  # a peer's own driver: no memalign driver note
    print_tables(
        score_tables(
            [
                ("a", {"score": 0.0, "n": 4, "n_failed": 1, "answer_attended": 92.0, "config": config}),
                ("b", {"score": 75.0, "n": 4, "answer_attended": 90.0, "config": near}),
            ]
        ),
        Console(file=screen, width=250),
    )
    out = screen.getvalue()
    assert "[1 failed] [att 92]" in out and "[att 90]" in out and "distance 512" in out


def test_plots_keep_methods_that_differ_only_in_memory_distance(tmp_path):
    budget = {"n_init": 128, "n_local": 2048, "n_mem": 1024, "last_token_alone": True}
    config = {"method": "em-llm", "task": "passkey", "model": "m", "length": 8192, "method_config": {"budget": budget}}
    near = {**config, "method_config": {"budget": {**budget, "memory_distance": 512}}}
    depths = {"0.000": 100.0, "0.500": 0.0}
    written = write_plots(
        [
            ("a", {"score": 50.0, "n": 2, "by_depth": depths, "config": config}),
            ("b", {"score": 100.0, "n": 2, "by_depth": {"0.000": 100.0, "0.500": 100.0}, "config": near}),
        ],
        tmp_path,
    )
    names = sorted(p.name for p in written)
    assert names == [
        "m__passkey__em-llm-3200-d512__depth.png",
        "m__passkey__em-llm-3200__depth.png",
        "m__passkey__length.png",
    ]


def test_report_cells_show_failures_and_answer_attention():
    assert score_cell(None) == "-"
    assert score_cell({"score": 50.0, "n": 2}) == "50.0 (2)"
    assert score_cell({"score": 0.0, "n": 1, "n_failed": 1, "answer_attended": 96.67}) == "0.0 (1) [1 failed] [att 97]"


def test_head_to_head_pairs_items_answered_by_both_methods(tmp_path):
    """Wins / ties / losses count only prompts both methods answered, rescored from the predictions."""
    from memalign.bench.report import head_to_head_table
    from memalign.bench.results import collect_items
    from memalign.bench.statistics import head_to_head

    def write(method: str, length: int, predictions: dict[str, str]) -> None:
        folder = tmp_path / f"passkey__{length}__m__{method}"
        folder.mkdir()
        config = {"task": "passkey", "length": length, "method": method, "model": "m", "seed": 0}
        (folder / "metrics.json").write_text(json.dumps({"score": 0.0, "n": len(predictions), "config": config}))
        rows = [
            {"id": i, "metric": "first_int_match", "answer": ["123"], "prediction": p} for i, p in predictions.items()
        ]
        (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    write("em-llm", 4096, {"a": "123", "b": "123", "c": "9", "only-em": "123"})
    write("infllm", 4096, {"a": "123", "b": "7", "c": "123"})
    write("em-llm", 16384, {"d": "123"})
    write("infllm", 16384, {"d": "5"})
    (row,) = head_to_head(collect_items([tmp_path]))
    assert (row.a, row.b, row.n) == ("em-llm", "infllm", 4)
    assert (row.wins, row.ties, row.losses) == (2, 1, 1)
    assert row.score_a == 75.0 and row.score_b == 50.0
    (long,) = head_to_head(collect_items([tmp_path], min_length=8192))
    assert (long.n, long.wins, long.ties, long.losses) == (1, 1, 0, 0)
    assert "| m | em-llm | infllm | 1 | 100.0 | 0.0 | 1 / 0 / 0 | 1 |" in head_to_head_table([long], 8192).to_markdown()


def test_sign_test_matches_hand_computed_binomial_tails():
    """Two-sided exact sign test: 10 wins / 1 loss -> 2 * (1 + 11) / 2**11; an even split or no strict
    difference proves nothing (p = 1)."""
    from memalign.bench.statistics import sign_test_p

    assert sign_test_p(10, 1) == pytest.approx(2 * 12 / 2**11)
    assert sign_test_p(0, 6) == pytest.approx(2 / 2**6)
    assert sign_test_p(3, 3) == 1.0 and sign_test_p(0, 0) == 1.0


def test_summary_grid_picks_default_runs_by_name_and_exact_labels():
    """A method name in the summary stands for its default-setting runs (any budget size); runs with a
    memory distance or the earlier driver only appear when named in full, so no row mixes configurations."""
    from memalign.bench.report import summary_grid, summary_tables

    budget = {"n_init": 128, "n_local": 2048, "n_mem": 1024, "last_token_alone": True}

    def result(method: str, length: int, score: float, n: int = 1, **extra: Any) -> tuple[str, dict[str, Any]]:
        config = {
            "method": method,
            "task": "passkey",
            "model": "m",
            "length": length,
            "method_config": {"budget": {**budget, **extra}} if method != "full" else {},
        }
        return (f"{method}{length}{extra}", {"score": score, "n": n, "config": config})

    results = [
        result("em-llm", 4096, 50.0, 2),
        result("em-llm", 8192, 100.0),
        result("em-llm", 8192, 0.0, memory_distance=512),
        result("full", 4096, 100.0, 2),
    ]
    grid = summary_grid(results, ["full", "em-llm", "infllm"])
    assert grid == {
        "m": [
            ("task", "method", ["4k", "8k"]),
            ("passkey", "full", ["100 (2)", "-"]),
            ("passkey", "em-llm", ["50 (2)", "100 (1)"]),
        ]
    }
    exact = summary_grid(results, ["em-llm (3200, distance 512)"])
    assert exact["m"][1] == ("passkey", "em-llm (3200, distance 512)", ["0 (1)"])
    assert "| passkey | full | 100 (2) | - |" in markdown_document(summary_tables(grid))
    two_budgets = [*results, result("em-llm", 4096, 0.0, n_mem=2048)]
    with pytest.raises(ValueError, match="name one of them in full"):
        summary_grid(two_budgets, ["em-llm"])


def test_a_copied_distractor_is_named_and_its_visibility_measured(tiny, tmp_path):
    """A wrong multi-key answer that is another needle's value is recorded as ``wrong_value`` with the
    share of memory layers that had it in view; numbers not in the context (or glued into a longer one)
    and the gold answer itself are not distractors."""
    import re

    from memalign.bench.needle import wrong_value
    from memalign.bench.runner import predict_one

    model, tok = tiny
    record = get_task("niah_multikey_2").records(TaskContext(tok), 1200, 1, seed=0)[0]  # a haystack of needles
    gold = record.answer[0]
    values = set(re.findall(r"(?<![0-9])[0-9]{7}(?![0-9])", record.context)) - {gold}
    assert values, "the multi-key haystack holds distractor values"
    distractor = sorted(values)[0]
    assert wrong_value(f" The number is {distractor}.", record) == distractor
    assert wrong_value(f" {gold}", record) is None
    assert wrong_value(" 1234567890123", record) is None and wrong_value(f" {distractor}9", record) is None
    assert wrong_value(" no digits here", record) is None

    class Copies:  # a method that answers the distractor; one of its two layers saw nothing of the context
        name = "copies"
        last_attended = None

        def generate(self, model, input_ids, max_new_tokens, stop_ids):
            self.last_attended = [[], [(0, input_ids.shape[1])]]
            return tok.encode(f" {distractor}.", add_special_tokens=False)

    row = predict_one(model, tok, Copies(), record)
    assert row["score"] == 0.0 and row["wrong_value"] == distractor and row["wrong_value_attended"] == 0.5
    assert row["answer_attended"] == 0.5
    from memalign.bench.runner import PREDICTIONS_FILE, summarize

    (tmp_path / PREDICTIONS_FILE).write_text(json.dumps(row) + "\n")
    metrics = summarize(tmp_path)
    assert metrics["n_wrong_value"] == 1 and metrics["wrong_value_attended"] == 50.0


def test_sweep_names_and_records_the_data_its_items_came_from(tmp_path):
    """An essay task's folder carries a hash of the essays (edited essays -> another folder) and records them
    by content; a task that never reads the essays keeps one folder whether or not --haystack is given."""
    from memalign.bench.runner import run_sweep

    essays = tmp_path / "essays"
    essays.mkdir()
    (essays / "a.txt").write_text("The cat sat on the mat. It was warm there. " * 60)
    results = run_sweep(
        ["niah", "passkey"], [400], ["full"], "tiny:llama", tmp_path / "res", samples=1, dtype="fp32", haystack=essays
    )
    niah, passkey = (r["config"] for r in results)
    assert niah["name"].startswith("niah__400__tiny-llama__full__fp32__data-") and niah["name"].endswith("__seed0")
    assert niah["data"]["haystack"]["path"] == str(essays.resolve()) and len(niah["data"]["haystack"]["sha256"]) == 64
    assert passkey["name"] == "passkey__400__tiny-llama__full__fp32__seed0" and passkey["data"] == {}
    recorded = yaml.safe_load((tmp_path / "res" / niah["name"] / "config.yaml").read_text())
    assert recorded["data"] == niah["data"] and recorded["model_identity"] == {"kind": "tiny", "name": "tiny:llama"}
    assert recorded["dtype_used"] == "fp32"
    (essays / "a.txt").write_text("The dog sat on the rug. It was cold there. " * 60)
    again = run_sweep(
        ["niah"], [400], ["full"], "tiny:llama", tmp_path / "res", samples=1, dtype="fp32", haystack=essays
    )
    assert again[0]["config"]["name"] != niah["name"]
