"""Filler text: the classic repeated noise sentences, and real essays read from a user-given folder."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from memalign.errors import DataError

# The Landmark-attention / RULER / InfiniteBench filler.
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


@functools.lru_cache(maxsize=4)
def _read_folder(directory: str) -> str:
    folder = Path(directory)
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        raise DataError(f"haystack folder {folder} has no .txt files (pass a folder of plain-text essays)")
    return "\n\n".join(f.read_text(encoding="utf-8", errors="replace").strip() for f in files)


def essay_text(directory: Path) -> str:
    """All ``*.txt`` files of the folder, in name order, joined by blank lines."""
    return _read_folder(str(Path(directory).resolve()))


@functools.lru_cache(maxsize=4)
def _sentences(directory: str) -> tuple[str, ...]:
    text = re.sub(r"\s+", " ", _read_folder(directory)).strip()
    return tuple(s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", text) if s)


def essay_sentences(directory: Path) -> tuple[str, ...]:
    """Sentences of the essays (a regex split at . ! ? before a capital: RULER uses nltk's punkt)."""
    return _sentences(str(Path(directory).resolve()))
