"""Identities of what a bench run reads: the model and the data files, recorded in each result folder.

A result folder may only be resumed by the very configuration that started it. Names are not enough
(``runA/ckpt`` retrained in place keeps its name; an essay folder can be edited), so the folder records
content fingerprints and a resume compares them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from memalign.bench.loaders.haystack import haystack_files

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def haystack_sha256(folder: Path) -> str:
    """One hash over the names and contents of the essay files, in the order they are read."""
    digest = hashlib.sha256()
    for path in haystack_files(folder):
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode() + b"\n")
    return digest.hexdigest()


def _stamp(path: Path) -> list[Any]:
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def _local_fingerprint(path: Path) -> str:
    """config.json's content plus every weight file's name, size and modification time.

    Hashing gigabytes of weights on every run would cost minutes; a retrained or replaced checkpoint
    changes its files' sizes or times, which is what this must notice.
    """
    if path.is_file():  # a .gguf
        parts: list[Any] = [_stamp(path)]
    else:
        config = path / "config.json"
        parts = [file_sha256(config) if config.is_file() else None]
        parts += [_stamp(p) for p in sorted(path.iterdir()) if p.suffix in _WEIGHT_SUFFIXES]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def model_identity(name: str, model: PreTrainedModel | None = None) -> dict[str, Any]:
    """What ``name`` denotes, precisely enough to refuse resuming with another model.

    A packaged preset is its name and the pinned sha256 of its weights; a local directory or ``.gguf`` its
    resolved path and a fingerprint of its files; a hub id its id and the commit the loaded model came
    from; a ``tiny:`` model its kind (built from a fixed config and seed).
    """
    from memalign.models.presets import PRESETS

    if name.startswith("tiny:"):
        return {"kind": "tiny", "name": name}
    if name in PRESETS:
        return {"kind": "preset", "name": name, "weights_sha256": PRESETS[name].sha256}
    path = Path(name).expanduser()
    if path.exists():
        return {"kind": "local", "path": str(path.resolve()), "fingerprint": _local_fingerprint(path.resolve())}
    revision = getattr(getattr(model, "config", None), "_commit_hash", None)
    return {"kind": "hub", "id": name, "revision": revision}
