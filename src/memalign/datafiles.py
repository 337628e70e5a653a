"""Reading the data files users pass (answers, item keys, rewordings, splits): one set of rules for all.

Every way a file can be unreadable -- missing, a folder, empty, not UTF-8, NUL bytes, a cut-off or ragged
CSV row -- becomes one :class:`~memalign.errors.DataError` naming the file (and line), instead of a
``UnicodeDecodeError`` from deep inside ``csv`` or a silently missing value. The sha256 returned with the
text is of the bytes just read, so a result folder records exactly what was scored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

from memalign.errors import DataError


def read_data_file(path: str | Path, what: str) -> tuple[str, str]:
    """(text, sha256 of the bytes) of a UTF-8 data file; every way it can be unreadable is a DataError.

    ``what`` names the kind of file in the message ("answers file", "personality prompts file"). The hash
    is of the bytes just read, so what a result folder records is exactly what was scored.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise DataError(f"{what} {path} is empty")
    try:
        text = data.decode("utf-8-sig")  # a BOM (Excel's CSV export) would otherwise hide the first column name
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{what} {path} is not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise DataError(f"{what} {path} contains NUL bytes: not a text file")
    return text, hashlib.sha256(data).hexdigest()


def decode_utf8(data: bytes, where: str, hint: str, *, at: str = "", error: type[Exception] = DataError) -> str:
    """``data`` as UTF-8 text; undecodable bytes are one ``error`` (a DataError unless told) saying
    ``{where} is not UTF-8 text (byte N{at}); {hint}``, where ``at`` says what N counts in ("of the line")."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text (byte {exc.start}{at}); {hint}") from None


def json_object(text: str, where: str, hint: str, expected: str = "a JSON object") -> dict[str, Any]:
    """The JSON object in ``text``; invalid JSON (``hint`` says what to check) or a JSON value that is not
    an object (``expected`` says what belongs there) is a DataError naming ``where``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc}); {hint}") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected {expected}, got a JSON {type(value).__name__}")
    return value


def csv_rows(text: str, path: Path) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """The header and (where, {column: value}) per data row of a CSV; cut-off or ragged rows are errors.

    ``csv.DictReader`` fills absent trailing fields with None (which would read as missing answers) and
    hides extra ones; here every row must have exactly the header's number of fields. A last line without
    a newline that ends in an empty field is refused too: that is what a file cut at a comma looks like.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[tuple[str, dict[str, str]]] = []
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            where = f"{path}: line {reader.line_num}"
            if header is None:
                header = [name.strip() for name in fields]
                seen: set[str] = set()
                for name in header:
                    if name in seen:
                        raise DataError(f"{where}: column {name!r} appears twice in the header")
                    seen.add(name)
                continue
            if len(fields) != len(header):
                raise DataError(
                    f"{where}: {len(fields)} fields but the header has {len(header)} (a cut-off or "
                    "malformed row; quote values that contain commas)"
                )
            rows.append((where, dict(zip(header, fields, strict=True))))
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
    if header is None:
        raise DataError(f"{path} is empty")
    if rows and not text.endswith(("\n", "\r")) and not rows[-1][1][header[-1]].strip():
        raise DataError(
            f"{rows[-1][0]}: the file ends in the middle of this row (no final newline after an "
            "empty field), so it looks cut off; write 0 for a missing answer and end the file with "
            "a newline"
        )
    return header, rows


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects whose keys are unique; ``json`` would silently keep the last of two ``i1`` values."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def parse_json_text(text: str, path: Path) -> Any:
    """JSON with unique keys per object; a malformed or cut-off document is a DataError naming the file."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise DataError(f"{path}: key {exc.args[0]!r} appears twice in one object") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); is the file complete?") from None
