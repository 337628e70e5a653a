"""Bad bench inputs fail as one clear MemalignError (API) or one red line with exit code 2 (CLI), and
leave no files behind: corrupt input files of every kind, out-of-range values, mismatched resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from memalign.bench.loaders.haystack import read_haystack
from memalign.bench.methods import Budget
from memalign.bench.records import read_appended_jsonl, read_records, write_records
from memalign.bench.runner import CONFIG_FILE, PREDICTIONS_FILE, RunConfig, run_records, run_sweep
from memalign.bench.tasks import TaskContext, get_task
from memalign.cli import app
from memalign.errors import ConfigError, DataError, MemalignError
from memalign.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOOD_RECORD = {
    "context": "c",
    "question": "q",
    "answer_prefix": "",
    "answer": ["a"],
    "max_new_tokens": 4,
    "task": "passkey",
    "metric": "first_int_match",
    "id": "x",
}

# name -> bytes of a bad JSONL input file
BAD_JSONL: dict[str, bytes] = {
    "empty": b"",
    "truncated": (json.dumps(GOOD_RECORD) + "\n" + json.dumps(GOOD_RECORD)[:25]).encode(),
    "random-bytes": bytes(range(256)) * 4,
    "not-utf8": json.dumps(GOOD_RECORD).encode().replace(b'"c"', b'"\xff\xfe"'),
    "json-array": b"[1, 2, 3]\n",
    "wrong-types": json.dumps({**GOOD_RECORD, "max_new_tokens": "many"}).encode() + b"\n",
    "missing-field": json.dumps({k: v for k, v in GOOD_RECORD.items() if k != "answer"}).encode() + b"\n",
}


def _one_line_naming(exc: BaseException, path: Path) -> None:
    text = str(exc)
    assert "\n" not in text and str(path) in text, text


@pytest.mark.parametrize("kind", list(BAD_JSONL))
def test_bad_records_file_is_one_data_error_naming_it(tmp_path, kind):
    path = tmp_path / "records.jsonl"
    path.write_bytes(BAD_JSONL[kind])
    with pytest.raises(DataError) as info:
        read_records(path)
    _one_line_naming(info.value, path)


def test_records_round_trip_and_missing_file(tmp_path):
    records = get_task("passkey").records(TaskContext(tiny_tokenizer()), 300, 2, seed=0)
    assert read_records(write_records(tmp_path / "r.jsonl", records)) == records
    with pytest.raises(DataError, match="does not exist"):
        read_records(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="is a folder"):
        read_records(tmp_path)


SUITE_ROWS = {
    "longbench:hotpotqa": {"_id": "h", "input": "Who?", "context": "Ann.", "answers": ["Ann"], "all_classes": None},
    "infinitebench:longbook_choice_eng": {
        "id": 0,
        "context": "A book.",
        "input": "Who?",
        "answer": ["Bob"],
        "options": ["Ann", "Bob", "Cy", "Di"],
    },
}
BAD_SUITE_FILES: dict[str, Any] = {
    **{k: v for k, v in BAD_JSONL.items() if k in ("empty", "truncated", "random-bytes", "not-utf8", "json-array")},
    "missing-field": lambda row: {k: v for k, v in row.items() if k != "context"},
    "wrong-type": lambda row: {**row, "context": 12},
}


@pytest.mark.parametrize("task", list(SUITE_ROWS))
@pytest.mark.parametrize("kind", list(BAD_SUITE_FILES))
def test_bad_suite_file_is_one_data_error_naming_it(tmp_path, task, kind):
    path = tmp_path / f"{task.split(':')[1]}.jsonl"
    bad = BAD_SUITE_FILES[kind]
    path.write_bytes(json.dumps(bad(SUITE_ROWS[task])).encode() + b"\n" if callable(bad) else bad)
    with pytest.raises(DataError) as info:
        get_task(task).records(TaskContext(tiny_tokenizer(), data_dir=tmp_path), 0, 0, seed=0)
    _one_line_naming(info.value, path)


def test_infinitebench_answer_outside_the_options_names_file_and_row(tmp_path):
    row = {**SUITE_ROWS["infinitebench:longbook_choice_eng"], "answer": ["Zed"]}
    (tmp_path / "longbook_choice_eng.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"longbook_choice_eng.jsonl: row 1: answer 'Zed' is not one of the options"):
        get_task("infinitebench:longbook_choice_eng").records(
            TaskContext(tiny_tokenizer(), data_dir=tmp_path), 0, 0, seed=0
        )


@pytest.mark.parametrize("kind", ["missing", "no-txt", "not-utf8", "binary", "all-empty"])
def test_bad_haystack_folder_is_one_data_error(tmp_path, kind):
    folder = tmp_path / "essays"
    if kind != "missing":
        folder.mkdir()
    if kind == "no-txt":
        (folder / "essay.md").write_text("text")
    elif kind == "not-utf8":
        (folder / "a.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    elif kind == "binary":
        (folder / "a.txt").write_bytes(b"text\x00\x01\x02")
    elif kind == "all-empty":
        (folder / "a.txt").write_text("  \n")
    with pytest.raises(DataError) as info:
        read_haystack(folder)
    assert "\n" not in str(info.value) and "essays" in str(info.value)


# ---- predictions.jsonl: the crash signature and real damage ---------------------------------------


def test_torn_last_prediction_line_is_dropped_and_the_file_repaired(tmp_path, caplog):
    path = tmp_path / PREDICTIONS_FILE
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "predic')
    with caplog.at_level("WARNING"):
        rows = read_appended_jsonl(path)
    assert [r["id"] for r in rows] == ["a", "b"] and "cut-off" in caplog.text
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'  # the next append starts on a fresh line
    path.write_text('{"id": "a"}\n{"id": "b"}')  # complete, only its newline missing: kept, line ended
    assert [r["id"] for r in read_appended_jsonl(path)] == ["a", "b"] and path.read_text().endswith("}\n")


def test_torn_line_that_is_not_the_last_is_a_data_error(tmp_path):
    path = tmp_path / PREDICTIONS_FILE
    path.write_text('{"id": "a"}\n{"id": "b", "pre\n{"id": "c"}\n')
    with pytest.raises(DataError, match=rf"{PREDICTIONS_FILE}:2: not valid JSON"):
        read_appended_jsonl(path)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama"), tiny_tokenizer()


def _records(tok, n=2):
    return get_task("passkey").records(TaskContext(tok), 300, n, seed=0)


def test_a_torn_prediction_is_redone_on_resume(tiny, tmp_path):
    model, tok = tiny
    cfg = RunConfig("passkey", 300, "full", "tiny:llama", samples=2, dtype="fp32")
    records = _records(tok)
    run_records(cfg, records, model, tok, tmp_path)
    path = tmp_path / cfg.name() / PREDICTIONS_FILE
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed while writing the second row
    (tmp_path / cfg.name() / "metrics.json").unlink()
    metrics = run_records(cfg, records, model, tok, tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert metrics["n"] == 2 and [r["id"] for r in rows] == [r.id for r in records]
    assert rows[1] == {**json.loads(lines[1]), "seconds": rows[1]["seconds"], "cpu_seconds": rows[1]["cpu_seconds"]}


# ---- resumes of another configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        (
            "model_identity",
            {"kind": "local", "path": "/runs/runA/ckpt", "fingerprint": "0" * 16},
            "model_identity.kind",
        ),
        ("dtype_used", "bf16", "dtype_used"),
        ("method_config", {"name": "full", "prefill_chunk": 64}, "method_config.prefill_chunk"),
        ("data", {"haystack": {"path": "/essays", "sha256": "f" * 64}}, "data.haystack"),
    ],
)
def test_resume_into_a_folder_of_another_configuration_is_refused(tiny, tmp_path, key, value, named):
    model, tok = tiny
    cfg = RunConfig("passkey", 300, "full", "tiny:llama", samples=1, dtype="fp32")
    records = _records(tok, 1)
    run_records(cfg, records, model, tok, tmp_path)
    folder = tmp_path / cfg.name()
    config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(yaml.safe_dump({**config, key: value}))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ConfigError, match=rf"differs in .*{named}"):
        run_records(cfg, _records(tok, 2), model, tok, tmp_path)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing touched


def test_resume_of_a_memory_budget_change_is_refused(tiny, tmp_path):
    model, tok = tiny
    budget = Budget(n_init=16, n_local=256, n_mem=128, chunk_size=64)
    cfg = RunConfig("passkey", 300, "em-llm", "tiny:llama", samples=1, budget=budget, dtype="fp32")
    run_records(cfg, _records(tok, 1), model, tok, tmp_path)
    folder = tmp_path / cfg.name()
    config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    config["method_config"]["em_config"]["n_mem"] = 256
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"method_config.em_config.n_mem \(256 recorded, 128 now\)"):
        run_records(cfg, _records(tok, 2), model, tok, tmp_path)


def test_old_style_folder_without_identity_is_not_resumed(tiny, tmp_path):
    model, tok = tiny
    cfg = RunConfig("passkey", 300, "full", "tiny:llama", samples=1, dtype="fp32")
    folder = tmp_path / cfg.name()
    folder.mkdir()
    (folder / CONFIG_FILE).write_text(yaml.safe_dump({"task": "passkey", "length": 300, "dtype": "auto"}))
    (folder / PREDICTIONS_FILE).write_text('{"id": "x"}\n')
    with pytest.raises(ConfigError, match="without recording seed, dtype_used, model_identity"):
        run_records(cfg, _records(tok, 1), model, tok, tmp_path)


def test_local_model_paths_and_dtypes_never_share_a_folder(tmp_path):
    for run in ("runA", "runB"):
        (tmp_path / run / "ckpt").mkdir(parents=True)
    a = RunConfig("passkey", 300, "full", str(tmp_path / "runA" / "ckpt"), dtype="fp32")
    b = RunConfig("passkey", 300, "full", str(tmp_path / "runB" / "ckpt"), dtype="fp32")
    assert a.name() != b.name() and a.name().startswith("passkey__300__ckpt-")
    assert (
        RunConfig("passkey", 300, "full", "m", dtype="bf16").name()
        != RunConfig("passkey", 300, "full", "m", dtype="fp32").name()
    )
    auto = RunConfig("passkey", 300, "full", "m", dtype="auto")
    assert f"__{auto.dtype_used()}__" in auto.name()  # auto is named after what it resolves to


def test_local_model_fingerprint_changes_with_its_weights(tmp_path):
    from memalign.bench.loaders.fingerprint import model_identity

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"1" * 10)
    before = model_identity(str(ckpt))
    (ckpt / "model.safetensors").write_bytes(b"2" * 11)  # retrained in place
    after = model_identity(str(ckpt))
    assert before["kind"] == "local" and before["path"] == str(ckpt.resolve())
    assert before["fingerprint"] != after["fingerprint"]


# ---- bad values: API and CLI, nothing left behind ---------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"samples": 0},
        {"samples": "3"},
        {"seed": -1},
        {"length": -5},
        {"prefill_chunk": 0},
        {"dtype": "fp8"},
        {"method": "magic"},
        {"task": "nope"},
        {"method": "em-llm", "budget": Budget(n_init=16, n_local=256, n_mem=64, chunk_size=64)},  # n_mem < one event
    ],
)
def test_bad_run_configs_fail_before_anything_runs(kwargs):
    base = {"task": "passkey", "length": 300, "method": "full", "model": "tiny:llama"}
    with pytest.raises(MemalignError) as info:
        RunConfig(**{**base, **kwargs})
    assert "\n" not in str(info.value)


def test_impossible_memory_budget_fails_before_the_model_loads(tmp_path, monkeypatch):
    import memalign.models

    def no_loading(*args, **kwargs):
        raise AssertionError("the model must not load for an impossible budget")

    monkeypatch.setattr(memalign.models, "load_model", no_loading)
    with pytest.raises(ConfigError, match="n_mem"):
        run_sweep(
            ["passkey"],
            [300],
            ["em-llm"],
            "tiny:llama",
            tmp_path / "out",
            budget=Budget(n_init=16, n_local=256, n_mem=64, chunk_size=64),
        )
    with pytest.raises(DataError, match="no such folder"):
        run_sweep(["passkey"], [300], ["full"], "tiny:llama", tmp_path / "out", haystack=tmp_path / "absent")
    with pytest.raises(DataError, match="hotpotqa.jsonl not found"):
        run_sweep(["longbench:hotpotqa"], [0], ["full"], "tiny:llama", tmp_path / "out", data_dir=tmp_path)
    assert not (tmp_path / "out").exists()


BASE = ["bench", "run", "-t", "passkey", "--lengths", "300", "--model", "tiny:llama", "--samples", "1"]
BAD_CLI = {
    "samples-zero": ["--samples", "0"],
    "samples-text": ["--samples", "three"],
    "lengths": ["--lengths", "4m"],
    "negative-budget": ["-m", "em-llm", "--n-init", "-1"],
    "chunk-over-window": ["-m", "em-llm", "--n-local", "64", "--chunk-size", "128"],
    "n-mem-below-event": ["-m", "em-llm", "--n-local", "256", "--n-mem", "64", "--chunk-size", "64"],
    "prefill-chunk": ["--prefill-chunk", "0"],
    "dtype": ["--dtype", "fp8"],
    "method": ["-m", "magic"],
    "task": ["-t", "nope"],
    "depths": ["--depths", "0,1.5"],
    "threads": ["--threads", "-2"],
    "haystack": ["--haystack", "/nonexistent/essays"],
    "data-dir": ["-t", "longbench:hotpotqa", "--lengths", "0", "--data-dir", "/nonexistent/data"],
}


def _cli(args: list[str]):
    """What ``memalign.cli.main`` does with a run: typer's own usage errors exit 2; a MemalignError becomes
    exit 2 with its message as the one line shown."""
    result = CliRunner().invoke(app, args)
    if isinstance(result.exception, MemalignError):
        return 2, str(result.exception)
    return result.exit_code, result.output


@pytest.mark.parametrize("case", list(BAD_CLI))
def test_bad_cli_values_exit_2_and_write_nothing(tmp_path, case):
    out = tmp_path / "res"
    code, text = _cli([*BASE, *BAD_CLI[case], "--out", str(out)])
    assert code == 2, text
    assert "Traceback" not in text
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        [
            "bench",
            "run",
            "-t",
            "passkey",
            "--lengths",
            "300",
            "-m",
            "em-llm",
            "--n-mem",
            "64",
            "--n-local",
            "256",
            "--chunk-size",
            "64",
            "--model",
            "tiny:llama",
        ],
        [
            "bench",
            "generate",
            "-t",
            "longbench:hotpotqa",
            "--lengths",
            "0",
            "--model",
            "tiny:llama",
            "--data-dir",
            "DATA",
        ],
    ],
)
def test_cli_subprocess_prints_one_line_and_exits_2(tmp_path, args):
    data = tmp_path / "data"
    data.mkdir()
    (data / "hotpotqa.jsonl").write_bytes(b"\x00\x01 not json")
    args = [a.replace("DATA", str(data)) for a in args]
    out = tmp_path / "out"
    args += ["--out", str(out / "r.jsonl" if "generate" in args else out)]
    env = {**os.environ, "MEMALIGN_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "memalign", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()
