"""Small helpers on sequences and names, shared so each rule exists once."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path


def common_prefix_length(*sequences: Sequence) -> int:
    """Length of the longest common prefix of strings or token-id lists (0 for none given)."""
    if not sequences:
        return 0
    n = 0
    for items in zip(*sequences, strict=False):
        if any(x != items[0] for x in items[1:]):
            break
        n += 1
    return n


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def model_slug(model: str | None) -> str:
    """The folder- and file-safe name of a model in result paths; one rule for bench and persona.

    A preset, ``tiny:`` model or hub id keeps its readable last part (``qwen2.5-coder-0.5b-instruct``,
    ``tiny-qwen3``, ``Qwen3-8B``). An existing local path would collide on its last part (``runA/ckpt`` and
    ``runB/ckpt``), so it gets a short hash of its resolved path appended. The full identity of the model is
    recorded in each result folder's configuration, which refuses a mismatch; the slug only keeps names apart.
    """
    if not model:
        return "no-model"
    text = str(model).strip().rstrip("/")
    path = Path(text).expanduser()
    name = text.split("/")[-1] if "/" in text and not text.startswith("tiny:") else text
    name = _UNSAFE.sub("-", name.replace(":", "-").removesuffix(".gguf")).strip("-.") or "model"
    if path.exists():
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
        return f"{name}-{digest}"
    return name
