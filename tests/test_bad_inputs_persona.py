"""Every persona input file, damaged every way a file gets damaged: one clear error, nothing written.

Each kind (answers JSON/CSV, item key, rewordings, split, personality prompts, steering directory) is fed
files that are empty, random bytes, not UTF-8, cut off, of the wrong shape, with duplicate ids or wrong
field counts. The library must raise one :class:`MemalignError` naming the file; the CLI must exit 2 with
one ``error:`` line and no traceback, and leave no output behind. Result folders must refuse a resume with
another configuration (subjects file, ``--raw`` vs ``--recoded``, model, item key, split) without touching
the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memalign import progress
from memalign.errors import ConfigError, DataError, MemalignError
from memalign.models.arch import get_arch_spec
from memalign.persona import (
    ItemSplit,
    Steering,
    SubjectAnswers,
    load_answers,
    load_item_key,
    load_rewordings,
    load_split,
    read_steering,
    save_steering,
)
from memalign.persona.evaluation import EvalSetup, run_eval
from memalign.persona.evaluation.runner import read_records
from memalign.persona.subjects import load_personality_prompts, read_answers_file
from memalign.testing import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ITEMS, N_SHORT = 20, 12  # the first 12 items form the short form: train 12, test 8
HEADER = "full_id,short_id,sign,facet_key,facet,text"


def key_text(n_items: int = N_ITEMS, word: str = "thing") -> str:
    rows = [HEADER]
    for i in range(1, n_items + 1):
        sign = ("+" if i % 3 else "-") + "NEOAC"[i % 5] + "1"
        rows.append(f"{i},{i if i <= N_SHORT else ''},{sign},{sign[1:]},Facet,Do {word} number {i}.")
    return "\n".join(rows) + "\n"


def subjects_json(n: int = 5, seed: int = 0) -> str:
    gen = torch.Generator().manual_seed(seed)
    return json.dumps(
        [
            {"case": f"s{k}", **{f"i{i}": int(torch.randint(1, 6, (1,), generator=gen)) for i in range(1, N_ITEMS + 1)}}
            for k in range(n)
        ]
    )


ANSWER_COLUMNS = ",".join(f"i{i}" for i in range(1, N_ITEMS + 1))
FULL_ROW = ",".join(str(1 + i % 5) for i in range(N_ITEMS))
CSV_OK = f"case,{ANSWER_COLUMNS}\na,{FULL_ROW}\nb,{FULL_ROW}\n"
LATIN1 = "case,i1\nJos\xe9,4\n".encode("latin-1")
RANDOM = bytes(range(256)) * 3  # not UTF-8 (0x80..0xff), with NUL bytes


@pytest.fixture
def files(tmp_path):
    """A consistent set of good input files, and a writer for bad ones."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "key.csv").write_text(key_text())
    (data / "subjects.json").write_text(subjects_json())
    return data


@pytest.fixture
def instrument(files):
    return load_item_key(files / "key.csv")


def write(folder: Path, name: str, content: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes (to prove a refusal wrote nothing)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line(message: str) -> None:
    assert message.strip() and "\n" not in message.strip(), message


# ---- the CLI, in process (fast) and once through `python -m memalign` ------------------------------
@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``memalign ARGS`` through the real entry point; returns (exit code, stderr). Logging restored."""
    from memalign.cli import main

    def run(*args: str) -> tuple[int, str]:
        root = logging.getLogger("memalign")
        saved = (list(root.handlers), root.propagate, root.level)
        reporter = progress.set_reporter(progress.LoggingReporter())
        progress.set_reporter(reporter)
        monkeypatch.setattr(sys, "argv", ["memalign", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            root.handlers[:], root.propagate = saved[0], saved[1]
            root.setLevel(saved[2])
            progress.set_reporter(reporter)
        return code, capsys.readouterr().err

    return run


def assert_refused(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def eval_args(files: Path, out: Path, subjects: Path | None = None, *extra: str) -> list[str]:
    return [
        "persona",
        "eval",
        "--modes",
        "predictors",
        "--item-key",
        files / "key.csv",
        "--subjects",
        subjects or files / "subjects.json",
        "--out",
        out,
        *(extra or ("--recoded",)),
    ]


# ---- answers files ---------------------------------------------------------------------------------
ANSWERS_CASES = [
    # (file name, content, what the message must say)
    ("empty.json", b"", "is empty"),
    ("blank.json", b"  \n\n", "is empty"),
    ("random.json", RANDOM, "not UTF-8"),
    ("latin1.json", LATIN1, "not UTF-8"),
    ("cut.json", subjects_json()[:200], "not valid JSON"),
    ("number.json", b"42", "expected a list of answer records"),
    ("object.json", b'{"subjects": []}', "memalign.answers/1"),
    ("lists.json", b"[[1, 2, 3]]", "record 0: expected an object"),
    ("dup-ids.json", json.dumps([json.loads(subjects_json())[0]] * 2), "record 1: subject id 's0' was already used"),
    ("dup-key.json", '[{"case": 1, "i1": 5, "i1": 1}]', "key 'i1' appears twice"),
    ("bad-id.json", json.dumps([{**json.loads(subjects_json())[0], "case": [1]}]), "case must be a text"),
    ("nothing.json", b"[]", "no answer records"),
    ("empty.csv", b"", "is empty"),
    ("random.csv", RANDOM, "not UTF-8"),
    ("latin1.csv", LATIN1, "not UTF-8"),
    ("nul.csv", CSV_OK.replace("a,", "a\x00,", 1), "NUL"),
    ("short-row.csv", CSV_OK + "c,1,2,3\n", "line 4: 4 fields but the header has 21"),
    ("long-row.csv", CSV_OK + f"c,{FULL_ROW},5\n", "line 4: 22 fields but the header has 21"),
    ("cut-mid-row.csv", CSV_OK + f"c,{FULL_ROW}"[:25], "line 4"),
    ("cut-at-comma.csv", CSV_OK + f"c,{FULL_ROW[:-1]}", "looks cut off"),
    ("dup-ids.csv", CSV_OK + f"a,{FULL_ROW}\n", "line 4: subject id 'a' was already used (line 2)"),
    ("dup-column.csv", "case,i1,i1\na,1,2\n", "column 'i1' appears twice"),
    ("quote.csv", CSV_OK + 'c,"1,2\n', "line"),
    ("header-only.csv", f"case,{ANSWER_COLUMNS}\n", "no answer records"),
]


@pytest.mark.parametrize(("name", "content", "message"), ANSWERS_CASES, ids=[c[0] for c in ANSWERS_CASES])
def test_answers_file_errors_name_the_file(tmp_path, instrument, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as info:
        load_answers(path, instrument, recoded=True, required_items=range(1, 2) if "dup-column" in name else None)
    assert message in str(info.value) and str(path) in str(info.value)
    one_line(str(info.value))


@pytest.mark.parametrize(("name", "content", "message"), ANSWERS_CASES, ids=[c[0] for c in ANSWERS_CASES])
def test_cli_eval_refuses_bad_answers_and_writes_nothing(cli, files, tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    out = tmp_path / "out"
    code, err = cli(*eval_args(files, out, path))
    assert_refused(code, err, message if "dup-column" not in name else "i1")
    assert not out.exists()


def test_good_csv_and_a_cut_looking_row_that_ends_with_a_newline(tmp_path, instrument):
    subjects = read_answers_file(write(tmp_path, "ok.csv", CSV_OK), instrument, recoded=False)
    assert [s.subject_id for s in subjects.subjects] == ["a", "b"] and len(subjects.sha256) == 64
    # an empty last field is a missing answer when the row is complete (ends with a newline) ...
    complete = read_answers_file(write(tmp_path, "gap.csv", CSV_OK + f"c,{FULL_ROW[:-1]}\n"), instrument, recoded=False)
    assert complete.subjects[-1].raw_answer(N_ITEMS) is None
    # ... and a file without a final newline is fine when its last field holds a value
    assert (
        len(read_answers_file(write(tmp_path, "nonl.csv", CSV_OK.rstrip("\n")), instrument, recoded=False).subjects)
        == 2
    )


def test_align_refuses_bad_answers_without_writing(cli, files, tmp_path):
    out = tmp_path / "steer"
    bad = write(tmp_path, "a.csv", CSV_OK + "c,1,2\n")
    code, err = cli(
        "persona",
        "align",
        "--model",
        "tiny:qwen3",
        "--answers",
        bad,
        "--item-key",
        files / "key.csv",
        "--out",
        out,
        "--raw",
    )
    assert_refused(code, err, str(bad), "line 4")
    assert not out.exists()
    code, err = cli(
        "persona",
        "align",
        "--model",
        "tiny:qwen3",
        "--answers",
        files / "subjects.json",
        "--item-key",
        files / "key.csv",
        "--out",
        out,
        "--recoded",
        "--k",
        "2.5",
    )
    assert_refused(code, err, "--k")
    assert not out.exists()


# ---- item key, rewordings, split (read by memalign.persona.instruments / prompts) -----------------------
REWORDINGS = "text,label_ocean,key\n" + "".join(
    f"Do thing number {i},{'NEOAC'[i % 5]},{1 if i % 3 else -1}\n" for i in range(1, N_SHORT + 1)
)
SPLIT = json.dumps({"train_index": list(range(1, N_SHORT + 1)), "test_index": list(range(N_SHORT + 1, N_ITEMS + 1))})

TABLE_CASES = [
    pytest.param("key", b"", id="key-empty"),
    pytest.param("key", RANDOM, id="key-random"),
    pytest.param("key", "full_id,sign,text\n1,+N1,Caf\xe9\n".encode("latin-1"), id="key-latin1"),
    pytest.param("key", key_text()[:-25], id="key-cut"),
    # A file cut inside the last text field, with no final newline, reads like a complete file: not detectable.
    pytest.param("key", "full_id,sign,text\n1,+N1\n", id="key-short-row"),
    pytest.param("key", key_text() + "21,,+N1,N1,Facet,Do thing.,extra\n", id="key-long-row"),
    pytest.param("key", key_text().replace("1,1,", "1,1\x00,", 1), id="key-nul"),
    pytest.param("rewordings", b"", id="rewordings-empty"),
    pytest.param("rewordings", RANDOM, id="rewordings-random"),
    pytest.param("rewordings", REWORDINGS.encode("utf-16"), id="rewordings-utf16"),
    pytest.param("rewordings", REWORDINGS[:-30], id="rewordings-cut"),
    pytest.param("rewordings", REWORDINGS.replace(",N,1\n", ",N,1,extra\n", 1), id="rewordings-long-row"),
    pytest.param("split", b"", id="split-empty"),
    pytest.param("split", RANDOM, id="split-random"),
    pytest.param("split", SPLIT[:30], id="split-cut"),
    pytest.param("split", b"[1, 2]", id="split-list"),
    pytest.param("split", b'{"train_index": 1, "test_index": [13]}', id="split-types"),
    pytest.param("split", b'{"train_index": [1, 2]}', id="split-missing-key"),
    pytest.param("split", b'{"train_index": [1, 99], "test_index": [13]}', id="split-unknown-item"),
]


@pytest.mark.parametrize(("kind", "content"), TABLE_CASES)
def test_item_key_rewordings_and_split_errors(tmp_path, instrument, kind, content):
    path = write(tmp_path, f"bad-{kind}", content)
    loaders = {
        "key": load_item_key,
        "rewordings": lambda p: load_rewordings(p, instrument),
        "split": lambda p: load_split(p, instrument),
    }
    with pytest.raises(MemalignError) as info:
        loaders[kind](path)
    assert str(path) in str(info.value) or kind == "split"
    one_line(str(info.value))


@pytest.mark.parametrize(
    ("flag", "content"),
    [
        ("--item-key", b""),
        ("--item-key", "full_id,sign,text\n1,+N1\n"),
        ("--split", SPLIT[:30]),
        ("--split", b'{"train_index": [1], "test_index": [1]}'),
        ("--rewordings", REWORDINGS[:-30]),
        ("--personality-prompts", b"[1, 2"),
        ("--personality-prompts", b'{"s0": "You are calm."}'),
    ],
)
def test_cli_eval_refuses_bad_side_files(cli, files, tmp_path, flag, content):
    bad = write(tmp_path, "bad-file", content)
    out = tmp_path / "out"
    args = eval_args(files, out)
    if flag == "--item-key":
        args[args.index("--item-key") + 1] = bad
    else:
        args += [flag, bad]
    if flag in ("--rewordings", "--personality-prompts"):  # read only for the modes that use them
        args[args.index("predictors")] = "personality_prompt"
        args += ["--model", "tiny:qwen3"]
    code, err = cli(*args)
    assert_refused(code, err)
    assert not out.exists()


# ---- personality prompts -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (LATIN1, "not UTF-8"),
        (b'[{"output": ["You are calm."]}', "not valid JSON"),
        (b"42", "expected a list"),
        (b'[{"output": ["You are calm."]}]', "one entry per subject"),
        (b'[{"output": []}, "ok"]', "entry 0"),
        (b'["fine", {"text": "x"}]', "entry 1"),
        (b'["fine", ""]', "entry 1"),
        (b'{"a": 5}', "entry 'a'"),
    ],
)
def test_personality_prompts_errors(tmp_path, content, message):
    path = write(tmp_path, "prompts.json", content)
    with pytest.raises(DataError) as info:
        load_personality_prompts(path, ["a", "b"])
    assert message in str(info.value) and str(path) in str(info.value)
    one_line(str(info.value))


def test_personality_prompts_formats(tmp_path):
    palign = write(tmp_path, "p.json", json.dumps([{"output": ["You are calm."]}, "You are bold."]))
    assert load_personality_prompts(palign, ["a", "b"]) == {"a": "You are calm.", "b": "You are bold."}
    mapping = write(tmp_path, "m.json", json.dumps({"a": {"output": ["Calm."]}, "b": "Bold."}))
    assert load_personality_prompts(mapping, ["a", "b"]) == {"a": "Calm.", "b": "Bold."}


# ---- steering directories --------------------------------------------------------------------------
def tiny_steering(alpha: float = 2.0) -> Steering:
    spec = get_arch_spec(tiny_config("qwen3"))
    gen = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(2, spec.head_dim, generator=gen), dim=-1)
    return Steering(
        ((0, 1), (1, 3)),
        directions,
        torch.tensor([0.5, 1.5]),
        alpha,
        spec.num_layers,
        spec.num_heads,
        spec.head_dim,
        "generated",
        {"model_type": "qwen3"},
    )


def _meta(directory: Path) -> dict:
    return json.loads((directory / "steering.json").read_text())


def _set_meta(directory: Path, **changes) -> None:
    meta = _meta(directory)
    for key, value in changes.items():
        if value is _DROP:
            meta.pop(key)
        else:
            meta[key] = value
    (directory / "steering.json").write_text(json.dumps(meta))


_DROP = object()


def _flip_byte(directory: Path) -> None:
    path = directory / "steering.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside the last tensor's numbers: still a readable file, wrong values
    path.write_bytes(bytes(data))


def _truncate(directory: Path) -> None:
    path = directory / "steering.safetensors"
    path.write_bytes(path.read_bytes()[:-20])


STEERING_CASES = {
    "flipped-byte": (_flip_byte, "does not match the checksum"),
    "truncated": (_truncate, "does not match the checksum"),
    "truncated-no-checksum": (
        lambda d: (_set_meta(d, tensors_sha256=_DROP), _truncate(d)),
        "not a readable safetensors file",
    ),
    "random-tensors": (lambda d: (d / "steering.safetensors").write_bytes(RANDOM), "checksum"),
    "random-tensors-no-checksum": (
        lambda d: (_set_meta(d, tensors_sha256=_DROP), (d / "steering.safetensors").write_bytes(RANDOM)),
        "safetensors",
    ),
    "no-tensors": (lambda d: (d / "steering.safetensors").unlink(), "not a steering directory"),
    "no-json": (lambda d: (d / "steering.json").unlink(), "not a steering directory"),
    "json-list": (lambda d: (d / "steering.json").write_text("[1, 2]"), "expected a JSON object"),
    "json-empty": (lambda d: (d / "steering.json").write_text(""), "not valid JSON"),
    "json-cut": (lambda d: (d / "steering.json").write_text((d / "steering.json").read_text()[:40]), "not valid JSON"),
    "json-latin1": (lambda d: (d / "steering.json").write_bytes(LATIN1), "not UTF-8"),
    "json-format": (lambda d: _set_meta(d, format="other/1"), "unknown format"),
    "alpha-text": (lambda d: _set_meta(d, alpha="2"), "'alpha' must be a finite number"),
    "alpha-list": (lambda d: _set_meta(d, alpha=[2]), "'alpha' must be a finite number"),
    "layers-text": (lambda d: _set_meta(d, num_layers="2"), "'num_layers' must be int"),
    "layers-bool": (lambda d: _set_meta(d, num_layers=True), "'num_layers' must be int"),
    "layers-zero": (lambda d: _set_meta(d, num_layers=0), "num_layers must be a positive integer"),
    "heads-outside": (lambda d: _set_meta(d, num_heads=2), "outside the model"),
    "no-alpha": (lambda d: _set_meta(d, alpha=_DROP), "missing field 'alpha'"),
    "no-positions": (lambda d: _set_meta(d, positions=_DROP), "missing field 'positions'"),
    "bad-positions": (lambda d: _set_meta(d, positions="some"), "positions must be one of"),
    "k-mismatch": (lambda d: _set_meta(d, k=5), "holds 2 heads"),
    "checksum-type": (lambda d: _set_meta(d, tensors_sha256=12), "hex string"),
}


@pytest.mark.parametrize("case", list(STEERING_CASES))
def test_damaged_steering_is_refused(tmp_path, case):
    damage, message = STEERING_CASES[case]
    directory = save_steering(tiny_steering(), tmp_path / "s")
    read_steering(directory)  # intact: loads
    damage(directory)
    with pytest.raises(DataError) as info:
        read_steering(directory)
    assert message in str(info.value) and str(tmp_path / "s") in str(info.value)
    one_line(str(info.value))


def test_steering_checksum_is_recorded_and_old_artifacts_still_load(tmp_path, caplog):
    steering = tiny_steering()
    directory = save_steering(steering, tmp_path / "s")
    meta = _meta(directory)
    assert meta["tensors_sha256"] == hashlib.sha256((directory / "steering.safetensors").read_bytes()).hexdigest()
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".")]  # no temporary files left
    _set_meta(directory, tensors_sha256=_DROP)  # written before checksums were recorded
    with caplog.at_level(logging.WARNING, logger="memalign"):
        loaded = read_steering(directory)
    assert loaded.heads == steering.heads and torch.equal(loaded.directions, steering.directions)
    assert any("no checksum" in r.getMessage() for r in caplog.records)
    resaved = save_steering(loaded, tmp_path / "again")  # saving again adds one
    assert "tensors_sha256" in _meta(resaved) and read_steering(resaved).alpha == steering.alpha


def test_cli_bake_refuses_a_damaged_steering(cli, tmp_path):
    directory = save_steering(tiny_steering(), tmp_path / "s")
    _flip_byte(directory)
    out = tmp_path / "baked"
    code, err = cli("persona", "bake", "--model", "tiny:qwen3", "--steering", directory, "--out", out)
    assert_refused(code, err, "checksum", str(directory))
    assert not out.exists()


# ---- result folders: a resume must be the same configuration -----------------------------------------
def test_cli_resume_refuses_another_configuration_and_touches_nothing(cli, files, tmp_path):
    out = tmp_path / "out"
    assert cli(*eval_args(files, out))[0] == 0
    config = json.loads((out / "config.json").read_text())
    assert config["files"]["subjects"]["recoded"] is True and config["model"] is None
    assert len(config["files"]["subjects"]["sha256"]) == 64 and len(config["data"]["item_key"]) == 64
    before = snapshot(out)
    other_subjects = write(tmp_path, "other.json", subjects_json(seed=1))
    other_key = write(tmp_path, "key2.csv", key_text(word="task"))
    moved_split = write(
        tmp_path,
        "split.json",
        json.dumps({"train_index": list(range(1, 11)), "test_index": list(range(11, N_ITEMS + 1))}),
    )
    for args, keys in [
        (eval_args(files, out, other_subjects), ("files.subjects.sha256",)),
        (eval_args(files, out, None, "--raw"), ("files.subjects.recoded (true -> false)",)),
        ([*eval_args(files, out)[:5], other_key, *eval_args(files, out)[6:]], ("files.item_key.sha256",)),
        ([*eval_args(files, out), "--split", moved_split], ("data.split",)),  # no split file before: by content
    ]:
        code, err = cli(*args)
        assert_refused(code, err, "different run", str(out), *keys)
        assert snapshot(out) == before

    # the same configuration resumes: other subjects of the same file, the default split given as a file
    same_split = write(
        tmp_path,
        "same.json",
        json.dumps({"test_index": list(range(N_ITEMS, N_SHORT, -1)), "train_index": list(range(1, N_SHORT + 1))}),
    )
    assert cli(*eval_args(files, out), "--limit", "2", "--split", same_split)[0] == 0
    assert json.loads((out / "ridge_no-model_OOD.json").read_text())["n_subjects"] == 2


def test_cli_resume_refuses_another_model_or_dtype(cli, files, tmp_path):
    out = tmp_path / "out"
    base = [
        "persona",
        "eval",
        "--modes",
        "NO_CHANGE",
        "--item-key",
        files / "key.csv",
        "--subjects",
        files / "subjects.json",
        "--recoded",
        "--limit",
        "1",
        "--out",
        out,
        "--threads",
        "1",
    ]
    assert cli(*base, "--model", "tiny:qwen3", "--dtype", "fp32")[0] == 0
    model = json.loads((out / "config.json").read_text())["model"]
    assert model["slug"] == "tiny-qwen3" and model["dtype"] == "float32" and len(model["weights_sha256"]) == 64
    assert (out / "NO_CHANGE_tiny-qwen3_OOD.json").is_file()
    before = snapshot(out)
    code, err = cli(*base, "--model", "tiny:llama", "--dtype", "fp32")
    assert_refused(code, err, "model.slug", "model.source")
    code, err = cli(*base, "--model", "tiny:qwen3", "--dtype", "bf16")
    assert_refused(code, err, 'model.dtype ("float32" -> "bfloat16")')
    assert snapshot(out) == before
    # predictors need no model: they join the folder whatever model it holds
    assert cli(*eval_args(files, out), "--limit", "1")[0] == 0


def test_folders_without_a_checkable_configuration_are_refused(cli, files, tmp_path):
    not_a_folder = write(tmp_path, "results.txt", "notes")
    code, err = cli(*eval_args(files, not_a_folder))
    assert_refused(code, err, "is a file")
    assert not_a_folder.read_text() == "notes"
    old = tmp_path / "old"
    (old / "records").mkdir(parents=True)
    (old / "config.json").write_text(json.dumps({"model": None, "modes": ["ridge"], "unparsed": "midpoint"}))
    code, err = cli(*eval_args(files, old))
    assert_refused(code, err, "older memalign")
    orphan = tmp_path / "orphan"
    (orphan / "records").mkdir(parents=True)
    (orphan / "records" / "ridge.jsonl").write_text('{"subject": "s0"}\n')
    code, err = cli(*eval_args(files, orphan))
    assert_refused(code, err, "ridge.jsonl", "no config.json")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"format": "memalign.persona_eval/2", "mod')
    code, err = cli(*eval_args(files, broken))
    assert_refused(code, err, "config.json is not valid JSON")


def test_torn_record_lines(cli, files, tmp_path):
    out = tmp_path / "out"
    assert cli(*eval_args(files, out), "--limit", "3")[0] == 0
    path = out / "records" / "ridge.jsonl"
    lines = path.read_text().splitlines()
    assert [json.loads(line)["subject"] for line in lines] == ["s0", "s1", "s2"]
    # an interrupted write leaves a torn last line: dropped, that subject redone, the file whole again
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    assert [r["subject"] for r in read_records(path)] == ["s0", "s1"]
    assert cli(*eval_args(files, out), "--limit", "3")[0] == 0
    assert [json.loads(line)["subject"] for line in path.read_text().splitlines()] == ["s0", "s1", "s2"]
    # a torn line anywhere else is damage, not an interruption
    path.write_text(lines[0][:40] + "\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(DataError, match=r"ridge.jsonl:1 is not valid JSON and is not the last line"):
        read_records(path)
    before = snapshot(out)
    code, err = cli(*eval_args(files, out), "--limit", "3")
    assert_refused(code, err, "ridge.jsonl:1")
    assert snapshot(out) == before


@pytest.mark.slow  # a fresh interpreter imports torch and transformers (~20 s on a busy CPU); `cli` covers main()
def test_a_mismatched_resume_through_python_m_memalign(cli, files, tmp_path):
    out = tmp_path / "out"
    assert cli(*eval_args(files, out))[0] == 0
    before = snapshot(out)
    env = {**os.environ, "MEMALIGN_PROGRESS": "0"}
    command = [sys.executable, "-m", "memalign", *map(str, eval_args(files, out, None, "--raw"))]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "files.subjects.recoded" in proc.stderr
    assert snapshot(out) == before


# ---- the runner's own refusals, and subjects that cannot be scored --------------------------------------
@pytest.fixture
def predictor_setup(files, instrument):
    population = load_answers(files / "subjects.json", instrument, recoded=True)
    split = ItemSplit(tuple(range(1, N_SHORT + 1)), tuple(range(N_SHORT + 1, N_ITEMS + 1)))
    return EvalSetup(instrument, split, population)


def test_no_test_items_or_duplicate_subjects_are_refused(predictor_setup, tmp_path):
    setup = predictor_setup
    empty = EvalSetup(setup.instrument, ItemSplit(setup.split.train + setup.split.test, ()), setup.population)
    with pytest.raises(ConfigError, match="no test items"):
        run_eval(empty, ["ridge"], setup.population, tmp_path / "a", None)
    with pytest.raises(ConfigError, match="'s0' is given twice"):
        run_eval(setup, ["ridge"], [setup.population[0]] * 2, tmp_path / "b", None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_subject_without_test_answers_is_counted_not_scored_as_perfect(predictor_setup, tmp_path, caplog):
    setup = predictor_setup
    blank = SubjectAnswers("blank", {i: v for i, v in setup.population[0].raw.items() if i <= N_SHORT})
    population = [*setup.population, blank]
    with_blank = EvalSetup(setup.instrument, setup.split, population)
    with caplog.at_level(logging.WARNING, logger="memalign"):
        path = run_eval(with_blank, ["always-3"], population, tmp_path / "with", None)["always-3"]
    doc = json.loads(path.read_text())
    record = next(r for r in doc["records"] if r["subject"] == "blank")
    assert record["n_scored"] == 0 and record["trait_sum"] is None and record["trait_mae"] == {}
    assert doc["n_subjects"] == 6 and doc["n_scored_subjects"] == 5
    assert doc["n_unscored_subjects"] == 1 and doc["unscored_subjects"] == ["blank"]
    assert sum("blank has no answers on the 8 test items" in r.getMessage() for r in caplog.records) == 1
    # the scores are those of the five scored subjects alone
    alone = json.loads(
        run_eval(setup, ["always-3"], setup.population, tmp_path / "alone", None)["always-3"].read_text()
    )
    assert doc["score"] == alone["score"] and not math.isnan(doc["score"]["sum_abs"])
    assert doc["score"]["std_sum_abs"] == alone["score"]["std_sum_abs"]


def test_api_resume_compares_the_data_by_content(predictor_setup, instrument, files, tmp_path):
    setup = predictor_setup
    run_eval(setup, ["ridge"], setup.population[:2], tmp_path, None)
    before = snapshot(tmp_path)
    raw = load_answers(files / "subjects.json", instrument, recoded=False)  # the same file read as --raw
    for other, key in [
        (EvalSetup(instrument, setup.split, raw), "data.subjects"),
        (EvalSetup(instrument, ItemSplit(setup.split.train[:-1], setup.split.test), setup.population), "data.split"),
    ]:
        with pytest.raises(ConfigError, match=rf"different run \({re.escape(key)}"):
            run_eval(other, ["ridge"], other.population[:2], tmp_path, None)
    assert snapshot(tmp_path) == before
    # a model-free run never names a model, so an LLM run may join later (and the other way round)
    assert json.loads((tmp_path / "config.json").read_text())["model"] is None
