"""A steering on disk: ``steering.safetensors`` (heads, directions, stds) + ``steering.json`` (metadata).

Never pickle: both files are plain data a user can inspect. The JSON records what is needed to refuse a
mismatch (model type, dims, weight fingerprint) and to reproduce the fit (model id, instrument, items,
prompt and fit configs, seed, CV table, library version).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import memalign
from memalign.errors import DataError, MemalignError
from memalign.persona.capture import model_fingerprint
from memalign.persona.steering import Steering

STEERING_FORMAT = "memalign.steering/1"
TENSORS_FILE = "steering.safetensors"
META_FILE = "steering.json"


def save_steering(steering: Steering, directory: str | Path) -> Path:
    """Write the two files into ``directory`` (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        "heads": torch.tensor(steering.heads, dtype=torch.int64).reshape(steering.k, 2),
        "directions": steering.directions.contiguous(),
        "stds": steering.stds.contiguous(),
    }
    save_file(tensors, str(directory / TENSORS_FILE))
    meta = {
        **steering.meta,
        "format": STEERING_FORMAT,
        "library_version": steering.meta.get("library_version", memalign.__version__),
        "alpha": steering.alpha,
        "k": steering.k,
        "positions": steering.positions,
        "num_layers": steering.num_layers,
        "num_heads": steering.num_heads,
        "head_dim": steering.head_dim,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return directory


def read_steering(directory: str | Path) -> Steering:
    """Load without a model (no compatibility check); prefer :func:`load_steering`."""
    directory = Path(directory)
    meta_path, tensor_path = directory / META_FILE, directory / TENSORS_FILE
    if not meta_path.is_file() or not tensor_path.is_file():
        raise DataError(f"{directory} is not a steering directory (needs {META_FILE} and {TENSORS_FILE})")
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{meta_path}: not valid JSON ({exc})") from None
    if meta.get("format") != STEERING_FORMAT:
        raise DataError(f"{meta_path}: unknown format {meta.get('format')!r} (expected {STEERING_FORMAT})")
    tensors = load_file(str(tensor_path))
    try:
        heads = [tuple(pair) for pair in tensors["heads"].tolist()]
        return Steering(heads, tensors["directions"], tensors["stds"], float(meta["alpha"]), int(meta["num_layers"]),
                        int(meta["num_heads"]), int(meta["head_dim"]), str(meta["positions"]), meta)
    except KeyError as exc:
        raise DataError(f"{directory}: missing field {exc}") from None
    except ValueError as exc:
        raise DataError(f"{directory}: {exc}") from None


def load_steering(path: str | Path, model: nn.Module, strict: bool = True) -> Steering:
    """Load a saved steering and check it fits ``model``; use ``with steering.apply(model): ...``.

    Dims (layers, heads, head_dim) and model type must match; with ``strict`` the weight fingerprint too
    (a steering fit on one checkpoint means little on another of the same shape).
    """
    steering = read_steering(path)
    steering.check_model(model)
    meta = steering.meta
    model_type = getattr(model.config, "model_type", None)
    if meta.get("model_type") and meta["model_type"] != model_type:
        raise MemalignError(f"{path} was fit on a {meta['model_type']!r} model, not {model_type!r}")
    if strict and meta.get("fingerprint") and meta["fingerprint"] != model_fingerprint(model):
        raise MemalignError(
            f"{path} was fit on {meta.get('model_id') or 'another model'} (weights fingerprint {meta['fingerprint']}), "
            f"which is not this model ({model_fingerprint(model)}); pass strict=False to apply it anyway"
        )
    return steering
