"""The tables and plots of ``memalign bench report``, built from collected results.

Each table is built once, as a :class:`memalign.reporting.Table`; the CLI prints it and the Markdown file
is its :meth:`~memalign.reporting.Table.to_markdown`, so the two views cannot disagree. The tables: a score
table per model and task (rows are methods with their budget, columns are lengths), an optional compact
summary per model (task x method rows), and the head-to-head of methods over the prompts both answered
(:mod:`memalign.bench.statistics`). Reading the folders is :mod:`memalign.bench.results`' job.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from memalign.bench.results import Result, grid, label_notes, length_label
from memalign.bench.statistics import Pairing
from memalign.errors import ConfigError
from memalign.reporting import plots
from memalign.reporting.table import Column, Table

ATTENDED_NOTE = "[att N]: % of memory layers whose last prompt token attended the answer"
SCORE_NOTE = f"score x100, samples in parentheses; {ATTENDED_NOTE}"
SUMMARY_NOTE = "score x100, samples"
H2H_NOTE = (
    "same prompts answered by both methods; wins / ties / losses of A against B; sign p: two-sided "
    "exact sign test over wins and losses"
)

SummaryGrid = dict[str, list[tuple[str, str, list[str]]]]
"""Per model: a header ``("task", "method", [length labels])``, then ``(task, method, cells)`` rows."""


# ---- score tables ----------------------------------------------------------------------------------


def score_cell(metrics: dict[str, Any] | None) -> str:
    """``score (n)``, plus ``[k failed]`` and ``[att N]`` when the run has them; ``-`` for no run."""
    if metrics is None:
        return "-"
    score = metrics.get("score")
    text = "n/a" if score is None else f"{score:.1f}"
    text += f" ({metrics.get('n', 0)})"
    if metrics.get("n_failed"):
        text += f" [{metrics['n_failed']} failed]"
    if metrics.get("answer_attended") is not None:
        text += f" [att {metrics['answer_attended']:.0f}]"
    return text


def _length_columns(lengths: list[int]) -> list[Column]:
    return [Column(length_label(n), numeric=True) for n in lengths]


def score_tables(results: list[Result]) -> list[Table]:
    """One table per (model, task), in name order: a row per method label, a column per length."""
    tables = []
    for (model, task), methods in sorted(grid(results).items()):
        lengths = sorted({n for per in methods.values() for n in per})
        rows = [[label, *(score_cell(per.get(n)) for n in lengths)] for label, per in sorted(methods.items())]
        tables.append(
            Table(
                title=task,
                subtitle=model,
                notes=SCORE_NOTE,
                rows=rows,
                columns=[Column("method", wrap=False), *_length_columns(lengths)],
            )
        )
    return tables


# ---- summary ---------------------------------------------------------------------------------------


def _matches(label: str, wanted: str) -> bool:
    """``wanted`` is a full label (``em-llm (3k, distance 512)``) or a method name; a name stands for its
    runs at the default settings: the budget may differ, any other note (memory distance, the earlier
    driver) keeps the label out, so one row never mixes two configurations."""
    if "(" in wanted:
        return label == wanted
    name = label.partition(" (")[0]
    return name == wanted and all(note[:-1].isdigit() or note.isdigit() for note in label_notes(label))


def summary_grid(results: list[Result], methods: list[str]) -> SummaryGrid:
    """Per model: one row per (task, method) -- tasks in name order, methods in the given order -- with
    ``score (n)`` at every length any of them has, the compact view of a whole sweep.

    Raises :class:`ConfigError` when two labels of one model and task match the same entry of ``methods``
    (two budgets under one name): the full labels must be named instead."""
    by_model: dict[str, dict[str, dict[str, dict[int, dict[str, Any]]]]] = {}
    for (model, task), per_label in grid(results).items():
        by_model.setdefault(model, {})[task] = per_label
    out: SummaryGrid = {}
    for model, tasks in sorted(by_model.items()):
        chosen: list[tuple[str, str, dict[int, dict[str, Any]]]] = []
        for task, per_label in sorted(tasks.items()):
            for wanted in methods:
                hits = [label for label in per_label if _matches(label, wanted)]
                if len(hits) > 1:
                    raise ConfigError(
                        f"{model} {task}: {wanted!r} matches {', '.join(sorted(hits))}; name one of them in full"
                    )
                if hits:
                    chosen.append((task, wanted, per_label[hits[0]]))
        if not chosen:
            continue
        lengths = sorted({n for *_, per in chosen for n in per})
        out[model] = [("task", "method", [length_label(n) for n in lengths])]
        for task, wanted, per in chosen:
            cells = [
                "-"
                if per.get(n) is None or per[n].get("score") is None
                else f"{per[n]['score']:.0f} ({per[n].get('n', 0)})"
                for n in lengths
            ]
            out[model].append((task, wanted, cells))
    return out


def summary_tables(summary: SummaryGrid) -> list[Table]:
    """One table per model of a :func:`summary_grid`."""
    tables = []
    for model, (header, *rows) in summary.items():
        columns = [
            Column(header[0], wrap=False),
            Column(header[1], wrap=False),
            *(Column(length, numeric=True) for length in header[2]),
        ]
        tables.append(
            Table(
                title=model,
                notes=SUMMARY_NOTE,
                columns=columns,
                rows=[[task, method, *cells] for task, method, cells in rows],
            )
        )
    return tables


# ---- head to head ----------------------------------------------------------------------------------

H2H_COLUMNS = (
    Column("model"),
    Column("A"),
    Column("B"),
    Column("items", numeric=True),
    Column("A score", numeric=True),
    Column("B score", numeric=True),
    Column("A wins / ties / B wins"),
    Column("sign p", numeric=True),
)


def head_to_head_table(pairs: list[Pairing], min_length: int = 0) -> Table:
    """The head-to-head rows as one table; ``min_length`` (cells compared from that length) goes in its notes."""
    where = f", cells >= {length_label(min_length)}" if min_length else ""
    rows = [
        [
            p.model,
            p.a,
            p.b,
            str(p.n),
            f"{p.score_a:.1f}",
            f"{p.score_b:.1f}",
            f"{p.wins} / {p.ties} / {p.losses}",
            f"{p.p_sign:.2g}",
        ]
        for p in pairs
    ]
    return Table(title="Head to head", notes=H2H_NOTE + where, columns=H2H_COLUMNS, rows=rows)


# ---- plots -----------------------------------------------------------------------------------------


def _label_slug(label: str) -> str:
    """A file-name form of a method label: ``em-llm (3200, distance 512)`` -> ``em-llm-3200-d512``, so
    labels differing only in budget or memory distance never overwrite each other's plot."""
    extras = [note.replace("distance ", "d").replace(" ", "-") for note in label_notes(label)]
    return "-".join([label.partition(" (")[0], *extras])


def write_plots(results: list[Result], folder: Path) -> list[Path]:
    """Score vs length per method (one PNG per model and task) and a depth x length heatmap per method."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for (model, task), methods in sorted(grid(results).items()):
        slug = f"{model}__{task.replace(':', '-')}"
        series = [
            (label, sorted((n, m["score"]) for n, m in per.items() if m.get("score") is not None and n > 0))
            for label, per in sorted(methods.items())
        ]
        written.append(
            plots.log2_lines(
                series,
                folder / f"{slug}__length.png",
                title=f"{task} - {model}",
                xlabel="context length (tokens)",
                ylabel="score",
                tick_label=lambda n: length_label(int(n)),
            )
        )
        for label, per in sorted(methods.items()):
            depths = sorted({float(d) for m in per.values() for d in (m.get("by_depth") or {})})
            lengths = sorted(n for n in per if n > 0)
            if len(depths) < 2 or not lengths:
                continue
            matrix = [[(per[n].get("by_depth") or {}).get(f"{d:.3f}", math.nan) for n in lengths] for d in depths]
            written.append(
                plots.heatmap(
                    matrix,
                    folder / f"{slug}__{_label_slug(label)}__depth.png",
                    columns=[length_label(n) for n in lengths],
                    rows=[f"{100 * d:.0f}%" for d in depths],
                    title=f"{task} - {model} - {label}",
                    xlabel="context length",
                    ylabel="needle depth",
                )
            )
    return written
