"""Reading result directories back: a score table (rich / Markdown), a head-to-head and PNG plots.

Rows are methods (with their budget), columns are lengths, one table per model and task; every
directory with a ``metrics.json`` counts, whoever wrote it (the runner or the kvpress peer script).

Cells with one to five samples cannot rank close methods, and cells of different methods often hold
different numbers of samples. The head-to-head pairs *items* instead: the same prompt (task, length,
seed, sample) answered by two methods, counted over every cell both have -- wins, ties and losses of
one method against the other, which is what "EM-LLM >= InfLLM >= streaming" claims -- with the two-sided
exact sign test over the strict differences (ties dropped), so a reader can see how little a handful
of wins proves.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from memalign.bench.methods import is_memory_method
from memalign.bench.records import iter_jsonl
from memalign.bench.runner import METRICS_FILE, PREDICTIONS_FILE, model_slug, rescore
from memalign.cli.display import console  # moved out by the report split

Result = tuple[str, dict[str, Any]]


def collect(directories: list[Path]) -> list[Result]:
    """``(directory name, metrics)`` for every metrics.json below the given folders, sorted by name."""
    found = {path.parent.name: json.loads(path.read_text()) for path in _metrics_paths(directories)}
    return sorted(found.items())


def _metrics_paths(directories: list[Path]) -> list[Path]:
    """Every metrics.json: the folder's own, else all below it."""
    paths: list[Path] = []
    for root in directories:
        paths += [root / METRICS_FILE] if (root / METRICS_FILE).is_file() else sorted(root.rglob(METRICS_FILE))
    return paths


Items = dict[tuple[str, str], dict[str, float]]


def collect_items(directories: list[Path], min_length: int = 0) -> Items:
    """Per (model, method label): the score (0-1) of every item, keyed by task/length/seed/id.

    Only cells of at least ``min_length`` tokens count (e.g. past a model's native context)."""
    items: Items = defaultdict(dict)
    for path in _metrics_paths(directories):
        cfg = json.loads(path.read_text()).get("config") or {}
        length = int(cfg.get("length", 0))
        predictions = path.parent / PREDICTIONS_FILE
        if length < min_length or not predictions.is_file():
            continue
        key = (model_slug(str(cfg.get("model", "?"))), method_label(cfg))
        prefix = f"{cfg.get('task', '?')}/{length}/{cfg.get('seed', 0)}/"
        for row in iter_jsonl(predictions):  # rescored as in metrics.json (kvpress rows carry no score)
            if row.get("id") is not None:
                items[key][prefix + str(row["id"])] = rescore(row)
    return dict(items)


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test: how likely at least this lopsided a split of the strict differences
    is if neither method were better (1.0 when there are none). Ties carry no sign and are dropped."""
    if wins + losses == 0:
        return 1.0
    from scipy.stats import binomtest  # scipy comes with scikit-learn; imported here, it is slow to load

    return float(binomtest(wins, wins + losses, 0.5).pvalue)


def head_to_head(items: Items) -> list[dict[str, Any]]:
    """Every pair of methods of a model that answered at least one common item: n paired items, each
    method's mean score (x100) over them, wins / ties / losses of ``a`` against ``b`` and the sign test's
    p-value over wins and losses."""
    rows = []
    by_model: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (model, label), scores in items.items():
        by_model[model][label] = scores
    for model, methods in sorted(by_model.items()):
        labels = sorted(methods)
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                shared = sorted(methods[a].keys() & methods[b].keys())
                if not shared:
                    continue
                pairs = [(methods[a][k], methods[b][k]) for k in shared]
                wins, losses = sum(x > y for x, y in pairs), sum(x < y for x, y in pairs)
                rows.append({"model": model, "a": a, "b": b, "n": len(pairs),
                             "score_a": 100 * sum(x for x, _ in pairs) / len(pairs),
                             "score_b": 100 * sum(y for _, y in pairs) / len(pairs),
                             "wins": wins, "ties": len(pairs) - wins - losses, "losses": losses,
                             "p_sign": sign_test_p(wins, losses)})
    return rows


H2H_NOTE = ("same prompts answered by both methods; wins / ties / losses of A against B; sign p: two-sided "
            "exact sign test over wins and losses")


def print_head_to_head(rows: list[dict[str, Any]], min_length: int = 0) -> None:
    where = f", cells >= {_length_label(min_length)}" if min_length else ""
    table = Table(title=escape(f"head to head ({H2H_NOTE}{where})"))
    for column in ("model", "A", "B", "items", "A score", "B score", "A wins / ties / B wins", "sign p"):
        numeric = "score" in column or column in ("items", "sign p")
        table.add_column(column, justify="right" if numeric else "left")
    for r in rows:
        table.add_row(r["model"], escape(r["a"]), escape(r["b"]), str(r["n"]), f"{r['score_a']:.1f}",
                      f"{r['score_b']:.1f}", f"{r['wins']} / {r['ties']} / {r['losses']}", f"{r['p_sign']:.2g}")
    console.print(table)


def markdown_head_to_head(rows: list[dict[str, Any]], min_length: int = 0) -> str:
    where = f", cells >= {_length_label(min_length)}" if min_length else ""
    lines = [f"**Head to head** ({H2H_NOTE}{where})", "",
             "| model | A | B | items | A score | B score | A wins / ties / B wins | sign p |",
             "|---|---|---|---:|---:|---:|---|---:|"]
    lines += [f"| {r['model']} | {r['a']} | {r['b']} | {r['n']} | {r['score_a']:.1f} | {r['score_b']:.1f} | "
              f"{r['wins']} / {r['ties']} / {r['losses']} | {r['p_sign']:.2g} |" for r in rows]
    return "\n".join(lines) + "\n"


def method_label(config: dict[str, Any]) -> str:
    """The method name, plus its KV budget when it has one (so different budgets never share a row)."""
    label = str(config.get("method", "?"))
    method_config = config.get("method_config") or {}
    budget = method_config.get("budget") or (config.get("budget") if label != "full" else None)
    if budget and label != "full":
        total = sum(int(budget.get(k, 0)) for k in ("n_init", "n_local", "n_mem"))
        size = f"{total // 1024}k" if total % 1024 == 0 else str(total)
        notes = [size]
        if budget.get("memory_distance") is not None:
            notes.append(f"distance {budget['memory_distance']}")
        # Absent on memalign's memory methods: written before the field existed, by the chunked driver.
        # Peers (kvpress) run their own driver and never carry it.
        if is_memory_method(label) and not budget.get("last_token_alone", False):
            notes.append("last token in chunk")
        label += f" ({', '.join(notes)})"
    return label


def _grid(results: list[Result]) -> dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]]:
    grid: dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for _, metrics in results:
        cfg = metrics.get("config") or {}
        key = (model_slug(str(cfg.get("model", "?"))), str(cfg.get("task", "?")))
        grid[key][method_label(cfg)][int(cfg.get("length", 0))] = metrics
    return grid


ATTENDED_NOTE = "[att N]: % of memory layers whose last prompt token attended the answer"


def _cell(metrics: dict[str, Any] | None) -> str:
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


def _length_label(length: int) -> str:
    return "as is" if length == 0 else (f"{length // 1024}k" if length % 1024 == 0 else str(length))


def print_table(results: list[Result]) -> None:
    for (model, task), methods in sorted(_grid(results).items()):
        lengths = sorted({n for per in methods.values() for n in per})
        # escape: cells and the note hold "[...]", which rich would otherwise read as markup and drop
        table = Table(title=escape(f"{task} - {model} (score x100, (n), {ATTENDED_NOTE})"))
        table.add_column("method", no_wrap=True)
        for n in lengths:
            table.add_column(_length_label(n), justify="right")
        for label, per in sorted(methods.items()):
            table.add_row(escape(label), *[escape(_cell(per.get(n))) for n in lengths])
        console.print(table)


def markdown_table(results: list[Result]) -> str:
    lines: list[str] = []
    for (model, task), methods in sorted(_grid(results).items()):
        lengths = sorted({n for per in methods.values() for n in per})
        lines += [f"**{task}**, {model} (score x100, samples in parentheses; {ATTENDED_NOTE})", "",
                  "| method | " + " | ".join(_length_label(n) for n in lengths) + " |",
                  "|---|" + "---:|" * len(lengths)]
        for label, per in sorted(methods.items()):
            lines.append(f"| {label} | " + " | ".join(_cell(per.get(n)) for n in lengths) + " |")
        lines.append("")
    return "\n".join(lines)


def _label_notes(label: str) -> list[str]:
    _, _, rest = label.partition(" (")
    return [part.strip() for part in rest.rstrip(")").split(",") if part.strip()]


def _matches(label: str, wanted: str) -> bool:
    """``wanted`` is a full label (``em-llm (3k, distance 512)``) or a method name; a name stands for its
    runs at the default settings: the budget may differ, any other note (memory distance, the earlier
    driver) keeps the label out, so one row never mixes two configurations."""
    if "(" in wanted:
        return label == wanted
    name = label.partition(" (")[0]
    notes = _label_notes(label)
    return name == wanted and all(note[:-1].isdigit() or note.isdigit() for note in notes)


def summary_grid(results: list[Result], methods: list[str]) -> dict[str, list[tuple[str, str, list[str]]]]:
    """Per model: one row per (task, method) -- tasks in name order, methods in the given order -- with
    ``score (n)`` at every length any of them has, the compact view of a whole sweep.

    Raises ``ValueError`` when two labels of one model and task match the same entry of ``methods`` (two
    budgets under one name): pass the full labels instead."""
    by_model: dict[str, dict[str, dict[str, dict[int, dict[str, Any]]]]] = defaultdict(dict)
    for (model, task), per_label in _grid(results).items():
        by_model[model][task] = per_label
    grid: dict[str, list[tuple[str, str, list[str]]]] = {}
    for model, tasks in sorted(by_model.items()):
        chosen: list[tuple[str, str, dict[int, dict[str, Any]]]] = []
        for task, per_label in sorted(tasks.items()):
            for wanted in methods:
                hits = [label for label in per_label if _matches(label, wanted)]
                if len(hits) > 1:
                    raise ValueError(f"{model} {task}: {wanted!r} matches {', '.join(sorted(hits))}; "
                                     "name one of them in full")
                if hits:
                    chosen.append((task, wanted, per_label[hits[0]]))
        if not chosen:
            continue
        lengths = sorted({n for *_, per in chosen for n in per})
        grid[model] = [("task", "method", [_length_label(n) for n in lengths])]
        for task, wanted, per in chosen:
            cells = []
            for n in lengths:
                metrics = per.get(n)
                cells.append("-" if metrics is None or metrics.get("score") is None
                             else f"{metrics['score']:.0f} ({metrics.get('n', 0)})")
            grid[model].append((task, wanted, cells))
    return grid


def print_summary(grid: dict[str, list[tuple[str, str, list[str]]]]) -> None:
    for model, (header, *rows) in grid.items():
        table = Table(title=escape(f"{model} (score x100, samples)"))
        for column in (header[0], header[1]):
            table.add_column(column, no_wrap=True)
        for length in header[2]:
            table.add_column(length, justify="right")
        for task, method, cells in rows:
            table.add_row(task, escape(method), *cells)
        console.print(table)


def markdown_summary(grid: dict[str, list[tuple[str, str, list[str]]]]) -> str:
    lines: list[str] = []
    for model, (header, *rows) in grid.items():
        lines += [f"**{model}** (score x100, samples)", "",
                  "| task | method | " + " | ".join(header[2]) + " |",
                  "|---|---|" + "---:|" * len(header[2])]
        lines += [f"| {task} | {method} | " + " | ".join(cells) + " |" for task, method, cells in rows]
        lines.append("")
    return "\n".join(lines)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def _label_slug(label: str) -> str:
    """A file-name form of a method label: ``em-llm (3200, distance 512)`` -> ``em-llm-3200-d512``, so
    labels differing only in budget or memory distance never overwrite each other's plot."""
    name, _, rest = label.partition(" (")
    extras = [part.strip().replace("distance ", "d").replace(" ", "-") for part in rest.rstrip(")").split(",")
              if part.strip()]
    return "-".join([name, *extras])


def write_plots(results: list[Result], folder: Path) -> list[Path]:
    """Score vs length per method (one PNG per model and task) and a depth x length heatmap per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for (model, task), methods in sorted(_grid(results).items()):
        slug = f"{model}__{task.replace(':', '-')}"
        fig, ax = plt.subplots(figsize=(7, 4.2))
        labels = sorted(methods)
        all_lengths: set[int] = set()
        for i, label in enumerate(labels):
            per = methods[label]
            points = sorted((n, m["score"]) for n, m in per.items() if m.get("score") is not None and n > 0)
            if points:
                all_lengths.update(p[0] for p in points)
                # methods often tie (0 or 100): a small horizontal offset per method keeps every line visible
                dodge = 2 ** (0.06 * (i - (len(labels) - 1) / 2))
                ax.plot([p[0] * dodge for p in points], [p[1] for p in points], label=label,
                        marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[i % len(LINESTYLES)])
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(all_lengths), [_length_label(n) for n in sorted(all_lengths)])
        ax.minorticks_off()
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("score")
        ax.set_ylim(-5, 105)
        ax.set_title(f"{task} - {model}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        path = folder / f"{slug}__length.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
        for label, per in sorted(methods.items()):
            depths = sorted({float(d) for m in per.values() for d in (m.get("by_depth") or {})})
            lengths = sorted(n for n in per if n > 0)
            if len(depths) < 2 or not lengths:
                continue
            matrix = [[(per[n].get("by_depth") or {}).get(f"{d:.3f}", float("nan")) for n in lengths] for d in depths]
            fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.45 * len(depths)))
            image = ax.imshow(matrix, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
            ax.set_xticks(range(len(lengths)), [_length_label(n) for n in lengths])
            ax.set_yticks(range(len(depths)), [f"{100 * d:.0f}%" for d in depths])
            ax.set_xlabel("context length")
            ax.set_ylabel("needle depth")
            ax.set_title(f"{task} - {model} - {label}", fontsize=9)
            fig.colorbar(image, ax=ax)
            path = folder / f"{slug}__{_label_slug(label)}__depth.png"
            fig.tight_layout()
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    return written
