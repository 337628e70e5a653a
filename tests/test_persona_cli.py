"""``memalign persona quiz`` writes a file that ``memalign persona align`` accepts; align saves a steering."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from memalign.cli import app
from memalign.persona import load_ipip_neo_300, load_steering, read_steering
from memalign.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TRAITS = "NEOAC"


@pytest.fixture
def item_key(tmp_path):
    rows = ["full_id,short_id,sign,facet_key,facet,text"]
    for i in range(1, 15):
        sign = ("+" if i % 3 else "-") + TRAITS[i % 5] + "1"
        short = str(i) if i <= 10 else ""
        rows.append(f"{i},{short},{sign},{sign[1:]},Facet,Do thing number {i}.")
    path = tmp_path / "key.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_quiz_then_align(tmp_path, item_key, isolated_cache):
    runner = CliRunner()
    answers = tmp_path / "me.json"
    replies = "\n".join(["5", "x", "1", "4", "", "2", "5", "1", "4", "2", "3"]) + "\n"
    result = runner.invoke(
        app, ["persona", "quiz", "--out", str(answers), "--item-key", str(item_key), "--name", "ann"], input=replies
    )
    assert result.exit_code == 0, result.output
    document = json.loads(answers.read_text())
    assert document["recoded"] is False and document["subjects"][0]["id"] == "ann"
    record = document["subjects"][0]
    # "x" was refused and re-asked; the empty reply skipped item 4 (stored as 0 = missing).
    assert [record[f"i{i}"] for i in range(1, 11)] == [5, 1, 4, 0, 2, 5, 1, 4, 2, 3]
    assert "i11" not in record  # not in the short form

    out = tmp_path / "steer"
    result = runner.invoke(
        app,
        [
            "persona",
            "align",
            "--model",
            "tiny:qwen3",
            "--answers",
            str(answers),
            "--item-key",
            str(item_key),
            "--subject",
            "ann",
            "--out",
            str(out),
            "--k",
            "2",
            "--alpha-grid",
            "0,2",
            "--cv-folds",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "CV MAE" in result.output and "alpha" in result.output
    steering = read_steering(out)
    assert steering.k == 2 and steering.meta["subject_id"] == "ann"
    assert steering.meta["train_items"] == list(load_ipip_neo_300(item_key).short_form().ids)
    load_steering(out, tiny_model("qwen3"))  # the same tiny weights: accepted


def test_align_requires_declared_recoding(tmp_path, item_key):
    from memalign.cli import main  # noqa: F401  (the entry point turns MemalignError into one line)

    papi = tmp_path / "papi.json"
    papi.write_text(json.dumps([{"case": 1, **{f"i{i}": 4 for i in range(1, 15)}}]))
    result = CliRunner().invoke(
        app,
        [
            "persona",
            "align",
            "--model",
            "tiny:qwen3",
            "--answers",
            str(papi),
            "--item-key",
            str(item_key),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0
    assert "recoded" in str(result.exception)
