"""Filler text: the classic repeated noise sentences, and real essays read from a user-given folder."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from memalign.bench.loaders.haystack import read_haystack

# The Landmark-attention / RULER / InfiniteBench filler.
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


@functools.lru_cache(maxsize=4)
def _read_folder(directory: str) -> str:
    return read_haystack(Path(directory))


@functools.lru_cache(maxsize=4)
def _sentences(directory: str) -> tuple[str, ...]:
    text = re.sub(r"\s+", " ", _read_folder(directory)).strip()
    return tuple(s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", text) if s)


def essay_sentences(directory: Path) -> tuple[str, ...]:
    """Sentences of the essays (a regex split at . ! ? before a capital: RULER uses nltk's punkt)."""
    return _sentences(str(Path(directory).resolve()))
