"""Shared pieces of the real-suite loaders: finding and reading the official files, splitting a prompt
template at its context, registering one task per file.

Every file a user points memalign at is read here, so a wrong file fails the same way for every suite:
one :class:`DataError` naming the file (and line) and what is wrong with it, never a traceback from the
JSON parser or a silently skipped row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memalign.bench.records import Record, iter_jsonl
from memalign.bench.tasks.base import Task, TaskContext, add_task
from memalign.errors import ConfigError, DataError


@dataclass(frozen=True)
class SuiteFile:
    """Where a real-suite task reads its rows: ``<data dir>/<file>.jsonl`` of ``suite``."""

    suite: str
    file: str
    hint: str

    def locate(self, data_dir: Path | None) -> Path:
        return find_jsonl(data_dir, self.file, self.suite, self.hint)


# Task name -> its file; filled by register_suite_tasks, read by the runner to fingerprint the data.
SUITE_FILES: dict[str, SuiteFile] = {}


def find_jsonl(data_dir: Path | None, name: str, suite: str, hint: str) -> Path:
    """``DIR/name.jsonl`` or ``DIR/data/name.jsonl``; a missing file says exactly where to put it."""
    if data_dir is None:
        raise ConfigError(f"{suite} task {name!r} reads local files: pass --data-dir DIR. {hint}")
    if not Path(data_dir).is_dir():
        raise DataError(f"{suite}: --data-dir {data_dir} is not a folder. {hint}")
    for candidate in (Path(data_dir) / f"{name}.jsonl", Path(data_dir) / "data" / f"{name}.jsonl"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{suite}: {Path(data_dir) / (name + '.jsonl')} not found. {hint}")


def suite_file(task: str, data_dir: Path | None) -> Path | None:
    """The file a real-suite task reads (``None`` for a synthetic task)."""
    spec = SUITE_FILES.get(task)
    return spec.locate(data_dir) if spec else None


def read_rows(path: Path, required: dict[str, type | tuple[type, ...]], n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows (all if ``n <= 0``), each checked for the official field names and types."""
    rows = []
    for lineno, row in enumerate(iter_jsonl(path), 1):
        missing = [f for f in required if f not in row]
        if missing:
            raise DataError(f"{path}: row {lineno} lacks field(s) {', '.join(missing)} (is this the official format?)")
        for name, kind in required.items():
            if not isinstance(row[name], kind):
                raise DataError(
                    f"{path}: row {lineno} field {name!r} is a {type(row[name]).__name__}, "
                    "not what the official format has there"
                )
        rows.append(row)
        if 0 < n <= len(rows):
            break
    if not rows:
        raise DataError(f"{path}: the file holds no rows (an empty or truncated download?)")
    return rows


def build_records(
    path: Path, rows: list[dict[str, Any]], build: Callable[[int, dict[str, Any]], Record]
) -> list[Record]:
    """``build(row number, row)`` for every row; a row the suite's rules cannot turn into a record (an answer
    that is not among the options, an empty answer list, ...) is a :class:`DataError` naming file and row."""
    records = []
    for lineno, row in enumerate(rows, 1):
        try:
            records.append(build(lineno, row))
        except (DataError, IndexError, KeyError, TypeError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
            raise DataError(f"{path}: row {lineno}: {reason}") from None
    return records


def split_template(template: str, fields: dict[str, Any]) -> tuple[str, str]:
    """(text before the context, text after it) with every other placeholder filled."""
    head, sep, tail = template.partition("{context}")
    if not sep:
        raise ValueError("prompt template has no {context}")
    return head.format(**fields), tail.format(**fields)


Loader = Callable[[str, TaskContext, int], list[Record]]


class SuiteTask(Task):
    """A real-suite task: its rows come from the suite's file, not from a generator."""

    synthetic = False

    def __init__(self, name: str, description: str, file: str, load: Loader) -> None:
        self.name, self.description, self._file, self._load = name, description, file, load

    def records(self, ctx: TaskContext, length: int, n: int, seed: int) -> list[Record]:
        return self._load(self._file, ctx, n)


def register_suite_tasks(prefix: str, suite: str, specs: dict[str, Any], load: Loader, hint: str) -> None:
    """One registered task ``<prefix>:<name>`` per spec, answering from ``load(name, ctx, n)``."""
    for name, spec in specs.items():
        add_task(SuiteTask(f"{prefix}:{name}", f"{suite} {name} ({spec.metric}) from --data-dir", name, load))
        SUITE_FILES[f"{prefix}:{name}"] = SuiteFile(suite, name, hint)
