"""Shared pieces of the real-suite loaders: finding the files, splitting a prompt template at its context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memalign.bench.records import iter_jsonl
from memalign.errors import ConfigError, DataError


def find_jsonl(data_dir: Path | None, name: str, suite: str, hint: str) -> Path:
    """``DIR/name.jsonl`` or ``DIR/data/name.jsonl``; a missing file says exactly where to put it."""
    if data_dir is None:
        raise ConfigError(f"{suite} task {name!r} reads local files: pass --data-dir DIR. {hint}")
    for candidate in (Path(data_dir) / f"{name}.jsonl", Path(data_dir) / "data" / f"{name}.jsonl"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{suite}: {Path(data_dir) / (name + '.jsonl')} not found. {hint}")


def read_rows(path: Path, required: tuple[str, ...], n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows (all if ``n <= 0``), each checked for the official field names."""
    rows = []
    for lineno, row in enumerate(iter_jsonl(path), 1):
        missing = [f for f in required if f not in row]
        if missing:
            raise DataError(f"{path}: row {lineno} lacks field(s) {', '.join(missing)} (is this the official format?)")
        rows.append(row)
        if 0 < n <= len(rows):
            break
    return rows


def split_template(template: str, fields: dict[str, Any]) -> tuple[str, str]:
    """(text before the context, text after it) with every other placeholder filled."""
    head, sep, tail = template.partition("{context}")
    if not sep:
        raise ValueError("prompt template has no {context}")
    return head.format(**fields), tail.format(**fields)
