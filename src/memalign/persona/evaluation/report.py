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
    rows = []
    for doc in sorted(results, key=lambda d: (str(d.get("model")), d["score"].get("sum_abs") or math.inf)):
        s = doc["score"]
        r_trait = [s.get(f"r_trait_{t}") for t in TRAITS]
        r_trait = [v for v in r_trait if v is not None and not math.isnan(v)]
        rows.append([str(doc.get("model") or "—"), doc["mode"], str(doc.get("n_subjects", "")),
                     *(_f(s.get(f"mean_{t}_abs")) for t in TRAITS), _f(s.get("sum_abs")), _f(s.get("sum_abs_argmax")),
                     _f(s.get("r_items")), _f(sum(r_trait) / len(r_trait) if r_trait else None),
                     str(doc.get("n_unparsed", 0)), _f(doc.get("seconds_per_subject"), 1)])
    return rows


HEADER = ["model", "mode", "subjects", *TRAITS, "sum (expected)", "sum (argmax)", "r items", "r traits",
          "unparsed", "s/subject"]


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines)


def plot_trait_errors(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: per-trait MAE by mode (one panel per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({str(d.get("model")) for d in results})
    fig, axes = plt.subplots(len(models), 1, figsize=(13, 3.8 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models, strict=True):
        docs = sorted((d for d in results if str(d.get("model")) == model), key=lambda d: d["score"]["sum_abs"] or 9)
        width = 0.8 / max(1, len(docs))
        for n, doc in enumerate(docs):
            values = [doc["score"].get(f"mean_{t}_abs") or 0.0 for t in TRAITS]
            ax.bar([x + n * width for x in range(len(TRAITS))], values, width, color=plt.cm.tab20(n % 20),
                   label=f"{doc['mode']} ({_f(doc['score'].get('sum_abs'))}, n={doc.get('n_subjects')})")
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(TRAITS))], list(TRAITS))
        ax.set_ylabel("MAE vs raw answers")
        ax.set_title(f"{model}: per-trait error on held-out items (legend: sum)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a bar
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_radar(results: Sequence[dict[str, Any]], path: Path, subject: str | None = None,
               modes: Sequence[str] = ("NO_CHANGE", "PAS", "PAS+profile", "few-shot")) -> Path | None:
    """One person's trait scores (held-out items) against the model's under each available LLM mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    angles = [2 * math.pi * n / len(TRAITS) for n in range(len(TRAITS))]
    fig = plt.figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(polar=True)

    def draw(values: dict[str, float], label: str, style: str = "-") -> None:
        pts = [values.get(t, math.nan) for t in TRAITS]
        ax.plot([*angles, angles[0]], [*pts, pts[0]], style, marker="o", label=label)

    draw(records[subject]["person_trait"], f"person {subject}", "k--")
    for mode, doc in by_mode.items():
        rec = next((r for r in doc.get("records", []) if r["subject"] == subject), None)
        if rec:
            draw(rec["model_trait"], f"{mode} (sum {_f(rec['trait_sum'])})")
    ax.set_xticks(angles, list(TRAITS))
    ax.set_ylim(1, 5)
    ax.set_title(f"trait scores on the held-out items: person {subject} vs model", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.25, -0.1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
