"""A steering on disk: ``steering.safetensors`` (heads, directions, stds) + ``steering.json`` (metadata).

Never pickle: both files are plain data a user can inspect. The JSON records what is needed to refuse a
mismatch (model type, dims, weight fingerprint), to reproduce the fit (model id, instrument, items,
prompt and fit configs, seed, CV table, library version) and the sha256 of the tensors file, so a damaged
or swapped ``steering.safetensors`` is refused instead of steering the model with wrong numbers.

Every way the pair can be unreadable — a missing or truncated file, a flipped byte, a JSON that is not
an object or lacks a field — is one :class:`~memalign.errors.DataError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as dump_safetensors
from torch import nn

import memalign
from memalign.datafiles import decode_utf8, json_object
from memalign.errors import DataError, MemalignError
from memalign.persona.capture import model_fingerprint
from memalign.persona.steering import Steering

logger = logging.getLogger(__name__)

STEERING_FORMAT = "memalign.steering/1"
TENSORS_FILE = "steering.safetensors"
META_FILE = "steering.json"
TENSORS_SHA256 = "tensors_sha256"
_TENSOR_NAMES = ("heads", "directions", "stds")


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` whole or not at all, so an interrupted save never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_steering(steering: Steering, directory: str | Path) -> Path:
    """Write the two files into ``directory`` (created if needed); returns the directory.

    The tensors are written first and the JSON (with their sha256) last: a save interrupted in between
    leaves a pair whose checksum does not match, which :func:`read_steering` refuses.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        "heads": torch.tensor(steering.heads, dtype=torch.int64).reshape(steering.k, 2),
        "directions": steering.directions.contiguous(),
        "stds": steering.stds.contiguous(),
    }
    data = dump_safetensors(tensors)
    _write_atomic(directory / TENSORS_FILE, data)
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
        TENSORS_SHA256: hashlib.sha256(data).hexdigest(),
    }
    _write_atomic(directory / META_FILE, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return directory


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = decode_utf8(data, str(path), "it is not a steering written by memalign")
    meta = json_object(text, str(path), "is the file complete?", "a JSON object of steering metadata")
    if meta.get("format") != STEERING_FORMAT:
        raise DataError(f"{path}: unknown format {meta.get('format')!r} (expected {STEERING_FORMAT})")
    return meta


def _field(meta: dict[str, Any], name: str, kind: type, path: Path) -> Any:
    """A typed metadata field; JSON has no int/float distinction for whole numbers, bools are not numbers."""
    if name not in meta:
        raise DataError(f"{path}: missing field {name!r}")
    value = meta[name]
    ok = (isinstance(value, kind) and not isinstance(value, bool)) or (
        kind is float and isinstance(value, int) and not isinstance(value, bool)
    )
    if not ok or (kind is float and not math.isfinite(value)):
        raise DataError(
            f"{path}: field {name!r} must be {'a finite number' if kind is float else kind.__name__}, got {value!r}"
        )
    return value


def _read_tensors(path: Path, expected_sha256: Any, meta_path: Path) -> dict[str, torch.Tensor]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if expected_sha256 is None:
        logger.warning(
            "%s records no checksum of %s (saved before memalign recorded one); loading it unverified, "
            "save it again to add one",
            meta_path,
            path.name,
        )
    elif not isinstance(expected_sha256, str):
        raise DataError(f"{meta_path}: field {TENSORS_SHA256!r} must be a hex string, got {expected_sha256!r}")
    elif hashlib.sha256(data).hexdigest() != expected_sha256.lower():
        raise DataError(
            f"{path} does not match the checksum in {meta_path.name} (damaged, truncated or replaced "
            "after saving); fit the steering again or restore both files together"
        )
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path} is not a readable safetensors file ({exc})") from None
    missing = [name for name in _TENSOR_NAMES if name not in tensors]
    if missing:
        raise DataError(f"{path}: missing tensor(s) {', '.join(missing)}")
    return tensors


def read_steering(directory: str | Path) -> Steering:
    """Load without a model (no compatibility check); prefer :func:`load_steering`."""
    directory = Path(directory)
    meta_path, tensor_path = directory / META_FILE, directory / TENSORS_FILE
    if not meta_path.is_file() or not tensor_path.is_file():
        raise DataError(f"{directory} is not a steering directory (needs {META_FILE} and {TENSORS_FILE})")
    meta = _read_meta(meta_path)
    alpha = float(_field(meta, "alpha", float, meta_path))
    dims = [_field(meta, name, int, meta_path) for name in ("num_layers", "num_heads", "head_dim")]
    positions = _field(meta, "positions", str, meta_path)
    tensors = _read_tensors(tensor_path, meta.get(TENSORS_SHA256), meta_path)
    heads = tensors["heads"]
    if heads.dim() != 2 or heads.shape[1] != 2 or heads.is_floating_point():
        raise DataError(
            f"{tensor_path}: 'heads' must be an integer (k, 2) tensor of (layer, head), got "
            f"{heads.dtype} {tuple(heads.shape)}"
        )
    if "k" in meta and meta["k"] != heads.shape[0]:
        raise DataError(f"{meta_path} says k = {meta['k']!r} but {tensor_path.name} holds {heads.shape[0]} heads")
    try:
        return Steering(
            tuple((int(layer), int(head)) for layer, head in heads.tolist()),
            tensors["directions"],
            tensors["stds"],
            alpha,
            *dims,
            positions,
            meta,
        )
    except MemalignError as exc:  # shapes or dims that do not fit together
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
