"""A person's questionnaire answers, with the raw answer and the keyed score kept apart.

Why two numbers: Johnson's IPIP-NEO data (and therefore PAlign's PAPI files) store reverse-keyed items
*recoded* toward the trait, so "Cheat to get ahead" holds 5 for someone who ticked "Very Inaccurate".
Prompts, probe labels and the alignment target need what the person actually ticked (``raw_answer``);
trait scores need the keyed score. Each source declares which one it stores (``recoded``).

Accepted answer files (items are ``i<full_id>`` keys/columns; values 1..5, 0 or empty = missing):

* PAPI JSON: a list of objects, one per person, ``case`` (or ``id``) plus ``i1``..``i300`` and any
  demographic fields. Does not say whether it is recoded: pass ``recoded=True`` for Johnson/PAPI data.
* memalign JSON (written by ``memalign persona quiz``): ``{"format": "memalign.answers/1",
  "instrument": ..., "recoded": false, "subjects": [ {"id": ..., "i1": 4, ...} ]}``.
* CSV: a header with ``case`` / ``id`` / ``subject`` and ``i<full_id>`` columns; every row has exactly
  the header's number of fields.

Every file is read by :func:`read_answers_file`. A file that is not UTF-8, empty, cut off, of the wrong
shape, or that repeats a subject id, is refused with one :class:`~memalign.errors.DataError` naming the
file and the row: a damaged file must never turn into "missing answers" or silently drop a person.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from memalign.datafiles import csv_rows, parse_json_text, read_data_file
from memalign.errors import ConfigError, DataError
from memalign.persona.instruments import Instrument, Item

ANSWERS_FORMAT = "memalign.answers/1"
_ITEM_KEY = re.compile(r"^i(\d+)$")
_ID_KEYS = ("case", "id", "subject")
MISSING = 0


@dataclass(frozen=True)
class ItemAnswer:
    item: Item
    raw_answer: int | None
    keyed_score: int | None


@dataclass(frozen=True)
class SubjectAnswers:
    """One person: ``raw[full_id]`` is the answer as ticked (1..5) or None when missing."""

    subject_id: str
    raw: Mapping[int, int | None]
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for item_id, value in self.raw.items():
            if value is not None and value not in (1, 2, 3, 4, 5):
                raise ValueError(f"subject {self.subject_id}: item {item_id} raw answer must be 1..5 or None")
        object.__setattr__(self, "raw", MappingProxyType(dict(self.raw)))
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

    def raw_answer(self, item_id: int) -> int | None:
        return self.raw.get(item_id)

    def keyed_score(self, item: Item) -> int | None:
        raw = self.raw.get(item.full_id)
        return None if raw is None else item.keyed_score(raw)

    def stance(self, item_id: int) -> int:
        """+1 agrees (4-5), -1 disagrees (1-2), 0 neutral or missing: the PAS probe label source."""
        raw = self.raw.get(item_id)
        if raw is None or raw == 3:
            return 0
        return 1 if raw > 3 else -1

    def answers(self, instrument: Instrument) -> list[ItemAnswer]:
        return [ItemAnswer(item, self.raw_answer(item.full_id), self.keyed_score(item)) for item in instrument]

    def restrict(self, item_ids: Iterable[int]) -> SubjectAnswers:
        """Only these items: what a fit is allowed to see (e.g. the training items of a split)."""
        keep = set(item_ids)
        return SubjectAnswers(self.subject_id, {k: v for k, v in self.raw.items() if k in keep}, self.info)


def _keyed_mean(subject: SubjectAnswers, items: Iterable[Item]) -> float:
    scores = [s for s in (subject.keyed_score(it) for it in items) if s is not None]
    return sum(scores) / len(scores) if scores else math.nan


def domain_scores(subject: SubjectAnswers, instrument: Instrument) -> dict[str, float]:
    """Mean keyed score per domain over answered items (NaN when a domain has no answer)."""
    return {d: _keyed_mean(subject, (it for it in instrument if it.domain == d)) for d in instrument.domains}


def facet_scores(subject: SubjectAnswers, instrument: Instrument) -> dict[str, float]:
    return {f: _keyed_mean(subject, (it for it in instrument if it.facet_key == f)) for f in instrument.facets}


def raw_from_value(value: int, item: Item, recoded: bool) -> int | None:
    """The person's raw answer from a stored value (0 = missing stays missing)."""
    if value == MISSING:
        return None
    return 6 - value if recoded and item.keyed < 0 else value


def value_from_raw(raw: int | None, item: Item, recoded: bool) -> int:
    """Inverse of :func:`raw_from_value`, for writing files in a source's convention."""
    if raw is None:
        return MISSING
    return 6 - raw if recoded and item.keyed < 0 else raw


def _parse_value(value: Any, where: str, column: str) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return MISSING
    if isinstance(value, bool):
        raise DataError(f"{where}: {column} must be an integer 0..5, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip().removesuffix(".0")
        if not text.lstrip("-").isdigit():
            raise DataError(f"{where}: {column} must be an integer 0..5, got {value!r}")
        value = int(text)
    if not isinstance(value, int) or not 0 <= value <= 5:
        raise DataError(f"{where}: {column} = {value!r} is out of range (1..5 answers, 0 = missing)")
    return value


def _record_to_subject(
    record: Mapping[str, Any],
    where: str,
    instrument: Instrument,
    required: tuple[int, ...],
    recoded: bool,
    fallback_id: str,
) -> SubjectAnswers:
    values: dict[int, int] = {}
    info: dict[str, Any] = {}
    for key, value in record.items():
        match = _ITEM_KEY.match(str(key).strip())
        if match is None:
            info[str(key)] = value
            continue
        item_id = int(match.group(1))
        if item_id not in instrument:
            raise DataError(f"{where}: column {key!r} names item {item_id}, which is not in {instrument.name}")
        if item_id in values:
            raise DataError(f"{where}: item {item_id} appears in two columns (e.g. i{item_id} and {key!r})")
        values[item_id] = _parse_value(value, where, str(key))
    missing = [i for i in required if i not in values]
    if missing:
        raise DataError(
            f"{where}: missing column i{missing[0]} ({len(missing)} of the {len(required)} required "
            f"items of {instrument.name} are absent)"
        )
    raw = {i: raw_from_value(v, instrument.item(i), recoded) for i, v in values.items()}
    id_key = next((k for k in _ID_KEYS if info.get(k) not in (None, "")), None)
    if id_key is None:
        return SubjectAnswers(fallback_id, raw, info)
    subject_id = info[id_key]
    if isinstance(subject_id, bool) or not isinstance(subject_id, (str, int)):
        raise DataError(f"{where}: {id_key} must be a text or an integer id, got {subject_id!r}")
    return SubjectAnswers(str(subject_id).strip(), raw, info)


def _resolve_recoded(declared_by_file: bool | None, recoded: bool | None, path: Path) -> bool:
    if declared_by_file is not None and recoded is not None and declared_by_file != recoded:
        raise ConfigError(f"{path} declares recoded={declared_by_file} but recoded={recoded} was passed")
    value = declared_by_file if declared_by_file is not None else recoded
    if value is None:
        raise ConfigError(
            f"{path} does not say whether its reverse-keyed answers are recoded toward the trait. Pass "
            "recoded=True (--recoded) for Johnson's IPIP-NEO / PAlign PAPI data, recoded=False (--raw) for "
            "answers as ticked"
        )
    return value


# ---- reading files -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnswersFile:
    """What one answers file holds: its subjects, the resolved recoding and the sha256 of its bytes."""

    path: Path
    subjects: tuple[SubjectAnswers, ...]
    recoded: bool
    sha256: str


def read_answers_file(
    path: str | Path, instrument: Instrument, recoded: bool | None = None, required_items: Iterable[int] | None = None
) -> AnswersFile:
    """Read every person in an answers file (formats in the module docstring) — the one loader for them.

    ``required_items`` (default: every item of ``instrument``) must be present in each record; an
    absent column is an error, an explicit 0/empty is a missing answer. Subject ids must be unique.
    Raises :class:`DataError` naming the file and the first bad row.
    """
    path = Path(path)
    text, digest = read_data_file(path, "answers file")
    required = tuple(required_items) if required_items is not None else instrument.ids
    declared: bool | None = None
    rows: Sequence[tuple[str, Any]]
    if path.suffix.lower() == ".csv":
        header, rows = csv_rows(text, path)
        if not any(_ITEM_KEY.match(c) for c in header):
            raise DataError(f"{path}: no item columns (expected i<full_id> headers such as i1, i2, ...)")
    else:
        data = parse_json_text(text, path)
        if isinstance(data, dict):
            if data.get("format") != ANSWERS_FORMAT or not isinstance(data.get("subjects"), list):
                raise DataError(f"{path}: a JSON object must be a {ANSWERS_FORMAT} file with a 'subjects' list")
            declared = data.get("recoded")
            if not isinstance(declared, bool):
                raise DataError(f"{path}: 'recoded' must be true or false")
            data = data["subjects"]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of answer records, got a JSON {type(data).__name__}")
        rows = [(f"{path}: record {n}", rec) for n, rec in enumerate(data)]
    if not rows:
        raise DataError(f"{path}: no answer records")
    resolved = _resolve_recoded(declared, recoded, path)
    subjects: list[SubjectAnswers] = []
    first_seen: dict[str, str] = {}
    for n, (where, record) in enumerate(rows):
        if not isinstance(record, Mapping):
            raise DataError(f"{where}: expected an object of i<full_id> answers, got {type(record).__name__}")
        subject = _record_to_subject(record, where, instrument, required, resolved, fallback_id=str(n))
        if (first := first_seen.get(subject.subject_id)) is not None:
            raise DataError(
                f"{where}: subject id {subject.subject_id!r} was already used ({first}); ids must be unique"
            )
        first_seen[subject.subject_id] = where.removeprefix(f"{path}: ")
        subjects.append(subject)
    return AnswersFile(path, tuple(subjects), resolved, digest)


def load_answers(
    path: str | Path, instrument: Instrument, recoded: bool | None = None, required_items: Iterable[int] | None = None
) -> list[SubjectAnswers]:
    """The subjects of an answers file (see :func:`read_answers_file`, which also returns its hash)."""
    return list(read_answers_file(path, instrument, recoded, required_items).subjects)


def load_personality_prompts(path: str | Path, subject_ids: Sequence[str]) -> dict[str, str]:
    """Per-subject "You are ..." descriptions: PAlign's ``personality_prompt*.json`` or a mapping.

    PAlign's file is a list in the subjects file's order (``subject_ids``), the text in ``output[0]``;
    ``{subject id: text or {"output": [text]}}`` is accepted too. Every entry must hold non-empty text.
    """
    path = Path(path)
    data = parse_json_text(read_data_file(path, "personality prompts file")[0], path)

    def text_of(entry: Any, where: str) -> str:
        value = entry
        if isinstance(entry, Mapping):
            output = entry.get("output")
            value = output[0] if isinstance(output, list) and output else None
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{path}: {where}: expected a non-empty text or {{'output': [text, ...]}}")
        return value

    if isinstance(data, dict):
        return {str(k): text_of(v, f"entry {k!r}") for k, v in data.items()}
    if not isinstance(data, list):
        raise DataError(
            f"{path}: expected a list (one entry per subject) or an object, got a JSON {type(data).__name__}"
        )
    if len(data) != len(subject_ids):
        raise DataError(
            f"{path} must be a list with one entry per subject of the subjects file "
            f"({len(subject_ids)}), in the same order; it has {len(data)}"
        )
    return {sid: text_of(entry, f"entry {n}") for n, (sid, entry) in enumerate(zip(subject_ids, data, strict=True))}


def find_subject(subjects: list[SubjectAnswers], subject: str) -> SubjectAnswers:
    """By id (``case``/``id``) first, else by 0-based position in the file."""
    for candidate in subjects:
        if candidate.subject_id == subject:
            return candidate
    if subject.isdigit() and int(subject) < len(subjects):
        return subjects[int(subject)]
    raise DataError(
        f"subject {subject!r} not found (ids such as {', '.join(s.subject_id for s in subjects[:3])}, "
        f"or a 0-based index below {len(subjects)})"
    )


def answers_document(subjects: Iterable[SubjectAnswers], instrument: Instrument) -> dict[str, Any]:
    """A memalign answers file (raw answers, ``recoded: false``) that :func:`load_answers` reads back."""
    records = []
    for subject in subjects:
        record: dict[str, Any] = {"id": subject.subject_id, **{k: v for k, v in subject.info.items() if k != "id"}}
        for item in instrument:
            record[f"i{item.full_id}"] = value_from_raw(subject.raw_answer(item.full_id), item, recoded=False)
        records.append(record)
    return {"format": ANSWERS_FORMAT, "instrument": instrument.name, "recoded": False, "subjects": records}
