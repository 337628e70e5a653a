"""Comparison table and plots from ``memalign persona eval`` output directories.

The table has one row per (model, mode): per-trait MAE of the expected answer against the raw answers,
their sum (PAlign's score), the sum for argmax/rounded answers, the per-person item correlation, the
across-subject trait correlation, unparsed answers and time per subject. Rows are sorted by the sum, so
where the LLM modes stand against ``always-3`` is visible at a glance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memalign.errors import ConfigError
from memalign.persona.evaluation.records import TRAITS
from memalign.reporting import plots
from memalign.reporting.table import Column, Table


def load_results(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every ``*_OOD.json`` in the given directories (or the files themselves)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.glob("*_OOD.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"{p} does not exist")
    if not files:
        raise ConfigError(f"no *_OOD.json result files in {', '.join(map(str, paths))}; run `memalign persona eval`")
    results = []
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{f} is not valid JSON ({err})") from None
        if "score" not in doc or "mode" not in doc:
            raise ConfigError(f"{f} is not a memalign persona eval result (no 'score'/'mode')")
        doc["_path"] = str(f)
        results.append(doc)
    return results


def _f(value: Any, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table_rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One formatted row per result, sorted by model, then by the sum of trait errors (best first)."""
    rows = []
    for doc in sorted(results, key=lambda d: (str(d.get("model")), d["score"].get("sum_abs") or math.inf)):
        s = doc["score"]
        r_trait = [s.get(f"r_trait_{t}") for t in TRAITS]
        r_trait = [v for v in r_trait if v is not None and not math.isnan(v)]
        rows.append(
            [
                str(doc.get("model") or "—"),
                doc["mode"],
                str(doc.get("n_subjects", "")),
                *(_f(s.get(f"mean_{t}_abs")) for t in TRAITS),
                _f(s.get("sum_abs")),
                _f(s.get("sum_abs_argmax")),
                _f(s.get("r_items")),
                _f(sum(r_trait) / len(r_trait) if r_trait else None),
                str(doc.get("n_unparsed", 0)),
                _f(doc.get("seconds_per_subject"), 1),
            ]
        )
    return rows


HEADER = [
    "model",
    "mode",
    "subjects",
    *TRAITS,
    "sum (expected)",
    "sum (argmax)",
    "r items",
    "r traits",
    "unparsed",
    "s/subject",
]
TITLE = "Personality alignment: MAE vs the person's raw answers on held-out items (lower is better)"


def comparison_table(results: Sequence[dict[str, Any]]) -> Table:
    """The comparison as a table model (printed by the CLI, written as Markdown by :func:`markdown_table`)."""
    columns = [Column(name, numeric=name not in ("model", "mode")) for name in HEADER]
    return Table(title=TITLE, columns=columns, rows=table_rows(results))


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """The comparison table in Markdown, without a heading (it goes under the caller's own)."""
    return comparison_table(results).to_markdown(heading=False)


def plot_trait_errors(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: per-trait MAE by mode (one panel per model)."""
    panels = []
    for model in sorted({str(d.get("model")) for d in results}):
        docs = sorted((d for d in results if str(d.get("model")) == model), key=lambda d: d["score"]["sum_abs"] or 9)
        bars = [
            (
                f"{doc['mode']} ({_f(doc['score'].get('sum_abs'))}, n={doc.get('n_subjects')})",
                [doc["score"].get(f"mean_{t}_abs") or 0.0 for t in TRAITS],
            )
            for doc in docs
        ]
        panels.append((f"{model}: per-trait error on held-out items (legend: sum)", bars))
    return plots.grouped_bars(panels, TRAITS, path, ylabel="MAE vs raw answers")


def plot_radar(
    results: Sequence[dict[str, Any]],
    path: Path,
    subject: str | None = None,
    modes: Sequence[str] = ("NO_CHANGE", "PAS", "PAS+profile", "few-shot"),
) -> Path | None:
    """One person's trait scores (held-out items) against the model's under each available LLM mode."""
    by_mode = {d["mode"]: d for d in results if d["mode"] in modes}
    if not by_mode:
        return None
    first = next(iter(by_mode.values()))
    records = {r["subject"]: r for r in first.get("records", [])}
    if not records:
        return None
    subject = subject or next(iter(records))
    if subject not in records:
        raise ConfigError(f"subject {subject} is not in the results")

    def traits(values: dict[str, float]) -> list[float]:
        return [values.get(t, math.nan) for t in TRAITS]

    series = [(f"person {subject}", traits(records[subject]["person_trait"]), "k--")]
    for mode, doc in by_mode.items():
        rec = next((r for r in doc.get("records", []) if r["subject"] == subject), None)
        if rec:
            series.append((f"{mode} (sum {_f(rec['trait_sum'])})", traits(rec["model_trait"]), "-"))
    return plots.radar(
        series, TRAITS, path, title=f"trait scores on the held-out items: person {subject} vs model", ylim=(1, 5)
    )
