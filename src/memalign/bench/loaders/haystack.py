"""The essay folder (``--haystack``) read strictly: UTF-8 ``.txt`` files with text in them.

Reading with replacement characters would hand the model mangled filler without a word; a folder that
is not what the user meant (a typo, the wrong folder, a binary dump) is one :class:`DataError` instead.
"""

from __future__ import annotations

from pathlib import Path

from memalign.errors import DataError


def haystack_files(folder: Path) -> list[Path]:
    """The folder's ``*.txt`` files in name order; a missing or empty folder is a :class:`DataError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--haystack {folder}: no such folder (pass a folder of plain-text .txt essays)")
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataError(f"--haystack {folder}: the folder has no .txt files (pass a folder of plain-text essays)")
    return files


def read_haystack(folder: Path) -> str:
    """All essays of the folder joined by blank lines, each checked to be UTF-8 text."""
    texts = []
    for path in haystack_files(folder):
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the essays as UTF-8 plain text") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        if "\x00" in text:
            raise DataError(f"{path}: holds NUL bytes, so it is not a plain-text essay")
        texts.append(text.strip())
    if not any(texts):
        raise DataError(f"--haystack {folder}: every .txt file is empty")
    return "\n\n".join(texts)
