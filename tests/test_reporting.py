"""The shared report layer: one table model rendered to Markdown and rich, the bench report's tables built
from result folders (Markdown unchanged to the byte), optional extras that say what to install."""

from __future__ import annotations

import io
import json
import sys

import pytest
from rich.console import Console

from memalign.bench.report import head_to_head_table, score_tables, summary_grid, summary_tables
from memalign.bench.results import collect, collect_items
from memalign.bench.statistics import head_to_head, sign_test_p
from memalign.cli.tables import rich_table
from memalign.errors import DataError, MissingExtraError
from memalign.reporting import Column, Table, markdown_document
from memalign.reporting.optional import import_extra

BUDGET = {"n_init": 128, "n_local": 2048, "n_mem": 1024, "last_token_alone": True}


def _write(root, method, length, predictions, *, task="passkey", extra=None, n_failed=0, attended=None):
    config = {"task": task, "length": length, "method": method, "model": "m", "seed": 0}
    if method != "full":
        config["method_config"] = {"budget": {**BUDGET, **(extra or {})}}
    folder = root / f"{task}__{length}__m__{method}{'-d' if extra else ''}"
    folder.mkdir()
    rows = [{"id": i, "metric": "first_int_match", "answer": ["123"], "prediction": p} for i, p in predictions.items()]
    metrics = {
        "score": 100 * sum(p == "123" for p in predictions.values()) / len(predictions),
        "n": len(predictions),
        "n_failed": n_failed,
        "config": config,
    }
    if attended is not None:
        metrics["answer_attended"] = attended
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


# What `memalign bench report --summary full,em-llm,infllm --markdown` wrote before the table model existed,
# for the folders of _sweep: the Markdown files in docs/ must keep their form.
EXPECTED_MARKDOWN = """\
**m** (score x100, samples)

| task | method | 4k | 8k | 16k |
|---|---|---:|---:|---:|
| passkey | full | 100 (3) | - | - |
| passkey | em-llm | 67 (3) | - | 100 (1) |
| passkey | infllm | 67 (3) | - | 0 (1) |
| vt | em-llm | - | 0 (1) | - |

**passkey**, m <SCORE>

| method | 4k | 16k |
|---|---:|---:|
| em-llm (3200) | 66.7 (3) [att 92] | 100.0 (1) |
| em-llm (3200, distance 512) | - | 100.0 (1) |
| full | 100.0 (3) | - |
| infllm (3200) | 66.7 (3) [1 failed] | 0.0 (1) |

**vt**, m <SCORE>

| method | 8k |
|---|---:|
| em-llm (3200) | 0.0 (1) |

**Head to head** <H2H>

| model | A | B | items | A score | B score | A wins / ties / B wins | sign p |
|---|---|---|---:|---:|---:|---|---:|
| m | em-llm (3200) | em-llm (3200, distance 512) | 1 | 100.0 | 100.0 | 0 / 1 / 0 | 1 |
| m | em-llm (3200) | full | 3 | 66.7 | 100.0 | 0 / 2 / 1 | 1 |
| m | em-llm (3200) | infllm (3200) | 4 | 75.0 | 50.0 | 2 / 1 / 1 | 1 |
| m | em-llm (3200, distance 512) | infllm (3200) | 1 | 100.0 | 0.0 | 1 / 0 / 0 | 1 |
| m | full | infllm (3200) | 3 | 100.0 | 66.7 | 1 / 2 / 0 | 1 |
""".replace(
    "<SCORE>",
    "(score x100, samples in parentheses; [att N]: % of memory layers whose last prompt token attended the answer)",
).replace(
    "<H2H>",
    "(same prompts answered by both methods; wins / ties / losses of A against B; sign p: two-sided exact "
    "sign test over wins and losses)",
)


@pytest.fixture
def sweep(tmp_path):
    _write(tmp_path, "em-llm", 4096, {"a": "123", "b": "123", "c": "9"}, attended=91.5)
    _write(tmp_path, "infllm", 4096, {"a": "123", "b": "7", "c": "123"}, n_failed=1)
    _write(tmp_path, "full", 4096, {"a": "123", "b": "123", "c": "123"})
    _write(tmp_path, "em-llm", 16384, {"d": "123"}, extra={"memory_distance": 512})
    _write(tmp_path, "em-llm", 16384, {"d": "123"})
    _write(tmp_path, "infllm", 16384, {"d": "5"})
    _write(tmp_path, "em-llm", 8192, {"x": "1"}, task="vt")
    return tmp_path


def test_bench_report_markdown_is_built_once_and_unchanged(sweep):
    results = collect([sweep])
    summary = summary_tables(summary_grid(results, ["full", "em-llm", "infllm"]))
    h2h = [head_to_head_table(head_to_head(collect_items([sweep])))]
    assert markdown_document([*summary, *score_tables(results), *h2h]) == EXPECTED_MARKDOWN


def test_cli_bench_report_prints_the_same_tables_it_writes(sweep, tmp_path):
    from typer.testing import CliRunner

    from memalign.cli import app

    out = CliRunner().invoke(
        app,
        [
            "bench",
            "report",
            str(sweep),
            "--summary",
            "full,em-llm,infllm",
            "--markdown",
            str(tmp_path / "r.md"),
            "--plots",
            str(tmp_path / "plots"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "r.md").read_text() == EXPECTED_MARKDOWN
    assert "[att 92]" in out.output and "[1 failed]" in out.output and "Head to head" in out.output
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["m__passkey__length.png", "m__vt__length.png"]
    long = CliRunner().invoke(
        app,
        [
            "bench",
            "report",
            str(sweep),
            "--compare-from",
            "16k",
            "--markdown",
            str(tmp_path / "long.md"),
            "--plots",
            str(tmp_path / "plots"),
        ],
    )
    assert long.exit_code == 0, long.output
    text = (tmp_path / "long.md").read_text()
    assert "cells >= 16k)" in text and "| m | em-llm (3200) | infllm (3200) | 1 | 100.0 | 0.0 | 1 / 0 / 0 | 1 |" in text


def test_table_markdown_layout_and_validation():
    table = Table(
        title="passkey",
        subtitle="m",
        notes="score",
        rows=[["full", "1.0"], ["em-llm", "2.0"]],
        columns=[Column("method", wrap=False), Column("4k", numeric=True)],
    )
    assert table.to_markdown() == (
        "**passkey**, m (score)\n\n| method | 4k |\n|---|---:|\n| full | 1.0 |\n| em-llm | 2.0 |"
    )
    assert table.to_markdown(heading=False).startswith("| method | 4k |\n")
    assert table.caption == "passkey - m (score)"
    assert markdown_document([]) == "" and markdown_document([table, table]).count("**passkey**") == 2
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        Table(title="t", columns=[Column("a"), Column("b")], rows=[["x"]])


def test_rich_table_keeps_bracketed_cells_and_aligns_numbers():
    table = Table(
        title="NO_CHANGE[read-answer]",
        columns=[Column("mode"), Column("score", numeric=True)],
        rows=[["PAS[k24]", "1.0 [1 failed]"], ["x", "12345.0"]],
    )
    rendered = rich_table(table)
    assert [c.justify for c in rendered.columns] == ["left", "right"]
    screen = io.StringIO()
    Console(file=screen, width=120).print(rendered)
    text = screen.getvalue()
    assert "NO_CHANGE[read-answer]" in text and "PAS[k24]" in text and "[1 failed]" in text
    assert "       x │" not in text and "│ x " in text  # a text column stays left-aligned


def test_missing_extras_say_what_to_install(monkeypatch):
    with pytest.raises(MissingExtraError, match=r"plotting needs memalign_no_such_pkg: install memalign\[eval\]"):
        import_extra("memalign_no_such_pkg.sub", "plotting")
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # an import of it now raises ImportError
    assert sign_test_p(0, 0) == 1.0  # nothing to test: scipy is not needed
    with pytest.raises(MissingExtraError, match=r"sign test needs scipy: install memalign\[eval\]"):
        sign_test_p(3, 1)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from memalign.reporting import plots

    with pytest.raises(MissingExtraError, match="matplotlib"):
        plots.pyplot()


def test_library_report_modules_do_not_import_rich():
    import ast
    from pathlib import Path

    import memalign

    root = Path(memalign.__file__).parent
    for path in [
        *(root / "bench").rglob("*.py"),
        *(root / "reporting").rglob("*.py"),
        root / "persona" / "evaluation" / "report.py",
    ]:
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n == "rich" or n.startswith(("rich.", "memalign.cli"))], path
        for top in tree.body:  # scipy / matplotlib only inside the functions that need them
            if isinstance(top, ast.Import | ast.ImportFrom):
                module = top.module if isinstance(top, ast.ImportFrom) else top.names[0].name
                assert not (module or "").startswith(("scipy", "matplotlib")), path


def test_a_malformed_metrics_file_is_named(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match=r"run/metrics.json is not valid JSON.*memalign bench score"):
        collect([tmp_path])


def test_persona_comparison_table_sorted_by_error():
    from memalign.persona.evaluation.report import HEADER, comparison_table, markdown_table

    def doc(mode: str, total: float) -> dict:
        return {"mode": mode, "model": "m", "n_subjects": 2, "score": {"sum_abs": total, "mean_A_abs": total / 5}}

    results = [doc("NO_CHANGE", 4.0), doc("PAS[k24]", 3.0), doc("always-3", 5.0)]
    table = comparison_table(results)
    assert [c.name for c in table.columns] == HEADER
    assert [row[1] for row in table.rows] == ["PAS[k24]", "NO_CHANGE", "always-3"]
    assert markdown_table(results) == table.to_markdown(heading=False)
    assert "| m | PAS[k24] | 2 | 0.60 |" in markdown_table(results)
