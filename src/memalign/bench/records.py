"""The one record schema every benchmark item is turned into (kvpress style), and its JSONL form.

A record is what a model is asked: ``context`` (the long part a memory method may compress or
evict), ``question`` and ``answer_prefix`` (always seen verbatim at the end), the gold ``answer``
strings, a generation budget and the ``metric`` that scores it. Because every task produces this
shape, one runner, one exporter (for the kvpress peer) and one scorer serve all of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memalign.datafiles import decode_utf8, json_object
from memalign.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """One benchmark item.

    ``answer`` is a list of gold strings; how they are used (all must appear, any may match, best
    F1, ...) is the metric's business. ``chat_template`` is False for tasks that the original
    benchmark feeds as a raw completion prompt (LongBench few-shot and code tasks). ``stop`` lists
    strings whose token ends generation early (LongBench's samsum stops at a newline). ``meta``
    carries task facts that reports group by (needle depth, target length) or metrics need
    (LongBench's ``all_classes``).
    """

    context: str
    question: str
    answer_prefix: str
    answer: list[Any]
    max_new_tokens: int
    task: str
    metric: str
    id: str = ""
    chat_template: bool = True
    stop: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"record {self.id or '?'} of {self.task or '?'}"
        if not isinstance(self.task, str) or not self.task:
            raise DataError("record has an empty task name (or one that is not a string)")
        if not isinstance(self.answer, list) or not self.answer:
            raise DataError(f"{where}: answer must be a non-empty list")
        if (
            not isinstance(self.max_new_tokens, int)
            or isinstance(self.max_new_tokens, bool)
            or self.max_new_tokens <= 0
        ):
            raise DataError(f"{where}: max_new_tokens must be an integer > 0, got {self.max_new_tokens!r}")
        for name in ("context", "question", "answer_prefix", "metric", "id"):
            if not isinstance(getattr(self, name), str):
                raise DataError(f"{where}: {name} must be a string")
        if not isinstance(self.chat_template, bool):
            raise DataError(f"{where}: chat_template must be true or false")
        if not isinstance(self.stop, list) or not all(isinstance(s, str) for s in self.stop):
            raise DataError(f"{where}: stop must be a list of strings")
        if not isinstance(self.meta, dict):
            raise DataError(f"{where}: meta must be an object")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def write_records(path: str | Path, records: Iterable[Record], extra: Iterable[dict[str, Any]] | None = None) -> Path:
    """Write records as JSONL; ``extra`` (one dict per record) adds fields such as token ids."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extras = iter(extra) if extra is not None else None
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            row = record.to_dict()
            if extras is not None:
                row.update(next(extras))
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def _open_error(path: Path, exc: OSError) -> DataError:
    reason = (
        "does not exist"
        if isinstance(exc, FileNotFoundError)
        else "is a folder, not a file"
        if isinstance(exc, IsADirectoryError)
        else exc.strerror or str(exc)
    )
    return DataError(f"{path}: {reason}")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _open_error(path, exc) from None


def _parse_line(path: Path, lineno: int, raw: bytes) -> dict[str, Any]:
    """One JSONL line as a dict; anything else is a :class:`DataError` naming file and line."""
    where = f"{path}:{lineno}"
    text = decode_utf8(raw, where, "save the file as UTF-8 JSON lines", at=" of the line")
    return json_object(text, where, "one JSON object per line expected", "one JSON object per line")


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        if raw.strip():
            yield lineno, raw


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; an unreadable file or a malformed line is a :class:`DataError` naming it."""
    path = Path(path)
    for lineno, raw in _lines(_read_bytes(path)):
        yield _parse_line(path, lineno, raw)


def read_appended_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file that is appended to one line at a time (``predictions.jsonl``).

    A process killed while writing leaves its last line cut off: that torn line is dropped from the
    file (with a warning) so the item it held is answered again and the next append starts on a fresh
    line. A bad line anywhere else is not a crash signature but a damaged file: :class:`DataError`.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = _read_bytes(path)
    lines = list(_lines(data))
    rows: list[dict[str, Any]] = []
    for k, (lineno, raw) in enumerate(lines):
        try:
            rows.append(_parse_line(path, lineno, raw))
        except DataError as exc:
            if k < len(lines) - 1:
                raise DataError(
                    f"{exc}; only the last line may be cut off by an interrupted run, so this "
                    "file is damaged: repair or delete that line"
                ) from None
            logger.warning(
                "%s:%d: dropped a cut-off last line (an interrupted write); its item is redone", path, lineno
            )
            _rewrite_lines(path, [line for _, line in lines[:-1]])
            return rows
    if data and not data.endswith(b"\n"):  # complete last row without its newline: end the line first
        _rewrite_lines(path, [line for _, line in lines])
    return rows


def _rewrite_lines(path: Path, lines: list[bytes]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(line + b"\n" for line in lines))
    tmp.replace(path)


_REQUIRED = ("context", "question", "answer_prefix", "answer", "max_new_tokens", "task", "metric")


def read_records(path: str | Path) -> list[Record]:
    """Records of a JSONL file written by :func:`write_records` (``memalign bench generate``).

    Every failure names the file and line: a missing field, a wrong type, an empty file.
    """
    path = Path(path)
    records = []
    for lineno, raw in _lines(_read_bytes(path)):
        row = _parse_line(path, lineno, raw)
        missing = [name for name in _REQUIRED if name not in row]
        if missing:
            raise DataError(f"{path}:{lineno}: record lacks field(s) {', '.join(missing)}")
        try:
            records.append(Record.from_dict(row))
        except (DataError, TypeError, ValueError) as exc:
            raise DataError(f"{path}:{lineno}: {exc}") from None
    if not records:
        raise DataError(f"{path}: no records (an empty file); write it with `memalign bench generate`")
    return records
