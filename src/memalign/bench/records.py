"""The one record schema every benchmark item is turned into (kvpress style), and its JSONL form.

A record is what a model is asked: ``context`` (the long part a memory method may compress or
evict), ``question`` and ``answer_prefix`` (always seen verbatim at the end), the gold ``answer``
strings, a generation budget and the ``metric`` that scores it. Because every task produces this
shape, one runner, one exporter (for the kvpress peer) and one scorer serve all of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memalign.errors import DataError


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
        if not self.task:
            raise DataError("record has an empty task name")
        if not isinstance(self.answer, list) or not self.answer:
            raise DataError(f"record {self.id or '?'} of {self.task}: answer must be a non-empty list")
        if self.max_new_tokens <= 0:
            raise DataError(f"record {self.id or '?'} of {self.task}: max_new_tokens must be > 0")
        for name in ("context", "question", "answer_prefix"):
            if not isinstance(getattr(self, name), str):
                raise DataError(f"record {self.id or '?'} of {self.task}: {name} must be a string")

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


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a malformed line is a :class:`DataError` naming the line."""
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None


def read_records(path: str | Path) -> list[Record]:
    return [Record.from_dict(row) for row in iter_jsonl(path)]
