"""Reading result folders back: every ``metrics.json`` below the given folders, whoever wrote it (the
runner or the kvpress peer script), grouped by model, task, method label and length.

A method's label carries its KV budget and any non-default setting (``em-llm (3200, distance 512)``),
so runs of one method under two configurations never share a row, a plot line or a head-to-head side.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from memalign.bench.methods import is_memory_method
from memalign.bench.records import iter_jsonl
from memalign.bench.runner import METRICS_FILE, PREDICTIONS_FILE, rescore
from memalign.errors import DataError
from memalign.text import model_slug

Result = tuple[str, dict[str, Any]]
"""``(folder name, metrics)``: one configuration's metrics.json, its run config under ``"config"``."""

Grid = dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]]
"""``(model, task) -> method label -> length -> metrics``."""

Items = dict[tuple[str, str], dict[str, float]]
"""``(model, method label) -> item key (task/length/seed/id) -> score in [0, 1]``."""


def collect(directories: list[Path]) -> list[Result]:
    """``(directory name, metrics)`` for every metrics.json below the given folders, sorted by name."""
    found = {path.parent.name: _read_metrics(path) for path in _metrics_paths(directories)}
    return sorted(found.items())


def _metrics_paths(directories: list[Path]) -> list[Path]:
    """Every metrics.json: the folder's own, else all below it."""
    paths: list[Path] = []
    for root in directories:
        paths += [root / METRICS_FILE] if (root / METRICS_FILE).is_file() else sorted(root.rglob(METRICS_FILE))
    return paths


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON ({exc.msg}); recompute it with `memalign bench score {path.parent}`"
        ) from None
    if not isinstance(metrics, dict):
        raise DataError(
            f"{path} holds a {type(metrics).__name__}, not a metrics object; recompute it with "
            f"`memalign bench score {path.parent}`"
        )
    return metrics


def collect_items(directories: list[Path], min_length: int = 0) -> Items:
    """Per (model, method label): the score (0-1) of every item, keyed by task/length/seed/id.

    Only cells of at least ``min_length`` tokens count (e.g. past a model's native context)."""
    items: Items = defaultdict(dict)
    for path in _metrics_paths(directories):
        cfg = _read_metrics(path).get("config") or {}
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


def label_notes(label: str) -> list[str]:
    """The settings in a label's parentheses: ``em-llm (3200, distance 512)`` -> ``["3200", "distance 512"]``."""
    _, _, rest = label.partition(" (")
    return [part.strip() for part in rest.rstrip(")").split(",") if part.strip()]


def grid(results: list[Result]) -> Grid:
    """Results arranged as ``(model, task) -> method label -> length -> metrics``."""
    out: Grid = defaultdict(lambda: defaultdict(dict))
    for _, metrics in results:
        cfg = metrics.get("config") or {}
        key = (model_slug(str(cfg.get("model", "?"))), str(cfg.get("task", "?")))
        out[key][method_label(cfg)][int(cfg.get("length", 0))] = metrics
    return out


def length_label(length: int) -> str:
    """``0`` (an untruncated suite) -> ``as is``, ``8192`` -> ``8k``, others as they are."""
    return "as is" if length == 0 else (f"{length // 1024}k" if length % 1024 == 0 else str(length))
