"""Save and restore the episodic memory held by an :class:`EMCache`: a versioned, atomic on-disk format.

A snapshot is a directory with two kinds of files:

``manifest.json``
    ``format`` (:data:`SNAPSHOT_FORMAT`), the :class:`EMConfig` it was built with, the model's dims and
    weight fingerprint, the cache's scalar state (logical length, per-sequence counters, segmentation
    flags) and the caller's ``extra`` metadata (a server keeps the conversation's messages there). It
    names the tensor file it belongs to.
``memory-<n>.safetensors``
    every tensor: per layer the window (tail) and sink K/V, the attention mass of the tail, the event
    archive with its representative keys; per sequence the token ids and hidden states that surprise
    segmentation still needs and the random generator's state.

Writes are atomic: the new tensor file is written under a fresh name and fsynced, then the manifest is
replaced (``os.replace``) to point at it, then the older tensor file is removed. A crash at any moment
leaves the previous snapshot or the new one, never a torn mixture. Nothing is pickled.

Restoring needs the same model (dims and fingerprint) and the same memory configuration, since events
were cut and represented by that model under those settings; anything else is refused with the reason.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from memalign.errors import DataError, MemalignError

if TYPE_CHECKING:
    from memalign.memory.cache import EMCache
    from memalign.memory.episodic import EpisodicMemory
    from memalign.memory.state import LayerMemory, SequenceMemory

SNAPSHOT_FORMAT = "memalign.memory-snapshot/1"
MANIFEST_FILE = "manifest.json"

__all__ = ["MANIFEST_FILE", "SNAPSHOT_FORMAT", "load_snapshot", "read_manifest", "save_snapshot"]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old content or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _model_info(memory: EpisodicMemory) -> dict[str, Any]:
    from memalign.persona.capture import model_fingerprint

    spec = memory.spec
    return {
        "model_type": spec.model_type,
        "num_layers": spec.num_layers,
        "num_heads": spec.num_heads,
        "num_kv_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "hidden_size": spec.hidden_size,
        "dtype": str(next(memory.model.parameters()).dtype).removeprefix("torch."),
        "fingerprint": model_fingerprint(memory.model),
    }


# ---- save -------------------------------------------------------------------------------------------
def _layer_tensors(prefix: str, layer: LayerMemory, out: dict[str, torch.Tensor]) -> dict[str, Any]:
    out[f"{prefix}.tail_k"] = layer.tail_k.view()
    out[f"{prefix}.tail_v"] = layer.tail_v.view()
    out[f"{prefix}.init_k"] = layer.init_k.view()
    out[f"{prefix}.init_v"] = layer.init_v.view()
    if layer.tail_mass is not None:
        out[f"{prefix}.tail_mass"] = layer.tail_mass.view()
    scalars: dict[str, Any] = {
        "tail_start": layer.tail_start,
        "contiguity": list(layer.contiguity),
        "last_retrieved": list(layer.last_retrieved),
        "events": 0,
    }
    store = layer.store
    if store is not None and len(store):
        pieces = store.archive.read(0, store.num_tokens)
        archive = pieces[0] if len(pieces) == 1 else torch.cat([p.to(pieces[0].device) for p in pieces])
        out[f"{prefix}.archive"] = archive  # [tokens, (k|v), Hkv, D]
        out[f"{prefix}.reprs"] = store.repr_matrix()
        scalars.update(
            events=len(store), sizes=store.sizes.tolist(), starts=list(store.starts), positions=list(store.positions)
        )
    return scalars


def _sequence_tensors(prefix: str, seq: SequenceMemory, out: dict[str, torch.Tensor]) -> dict[str, Any]:
    out[f"{prefix}.surprise_history"] = seq.surprise_history
    out[f"{prefix}.ids"] = seq._ids.view()
    out[f"{prefix}.hidden"] = seq._hidden.view()
    out[f"{prefix}.generator"] = seq.generator.get_state()
    layers = [_layer_tensors(f"{prefix}.layer{i}", layer, out) for i, layer in enumerate(seq.layers)]
    return {
        "length": seq.length,
        "decided": seq.decided,
        "flags": [bool(f) for f in seq.flags],
        "aux_start": seq._aux_start,
        "layers": layers,
    }


def save_snapshot(cache: EMCache, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the memory held by ``cache`` (every sequence) into ``directory``, atomically; returns it.

    ``extra`` is JSON-serialisable metadata stored with the snapshot and returned by :func:`load_snapshot`.
    Call it between forwards (not from inside a model call).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    memory = cache.memory
    tensors: dict[str, torch.Tensor] = {}
    sequences = [_sequence_tensors(f"seq{b}", seq, tensors) for b, seq in enumerate(cache.sequences)]
    if cache.unfed is not None:
        tensors["unfed"] = cache.unfed
    previous = _current_tensor_file(directory)
    serial = int(previous.stem.rsplit("-", 1)[1]) + 1 if previous is not None else 1
    tensor_file = directory / f"memory-{serial}.safetensors"
    # safetensors wants contiguous CPU tensors it owns; the clone also detaches views of live buffers.
    cpu = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{tensor_file.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(cpu, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, tensor_file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    manifest = {
        "format": SNAPSHOT_FORMAT,
        "tensors": tensor_file.name,
        "config": memory.config.to_dict(),
        "model": _model_info(memory),
        "seq_length": cache.seq_length,
        "sequences": sequences,
        "extra": extra or {},
    }
    write_atomic(directory / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    for stale in directory.glob("memory-*.safetensors"):
        if stale != tensor_file:
            stale.unlink(missing_ok=True)
    return directory


def _current_tensor_file(directory: Path) -> Path | None:
    try:
        name = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8")).get("tensors")
    except (OSError, ValueError):
        return None
    return directory / name if isinstance(name, str) and name.startswith("memory-") else None


# ---- load -------------------------------------------------------------------------------------------
def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a snapshot directory (no tensors read); refuses an unknown format."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise DataError(f"{directory} is not a memory snapshot (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SNAPSHOT_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataError(f"{path}: unknown snapshot format {found!r} (this memalign reads {SNAPSHOT_FORMAT})")
    return manifest


def _check_compatible(manifest: dict[str, Any], memory: EpisodicMemory, directory: Path) -> None:
    mine = _model_info(memory)
    theirs = manifest.get("model", {})
    diff = sorted(k for k in mine if theirs.get(k) != mine[k])
    if diff:
        details = ", ".join(f"{k}: saved {theirs.get(k)!r} vs now {mine[k]!r}" for k in diff)
        raise MemalignError(
            f"{directory}: this memory was built by another model ({details}); load it with the model that wrote it"
        )
    if manifest.get("config") != memory.config.to_dict():
        saved = manifest.get("config") or {}
        now = memory.config.to_dict()
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise MemalignError(
            f"{directory}: this memory was built with other EMConfig settings ({', '.join(diff)}); "
            "use the configuration it was saved with"
        )


def _fill(buffer: Any, data: torch.Tensor) -> None:
    if data.shape[1]:
        buffer.append(data.to(buffer.device, buffer.dtype))


def _restore_layer(prefix: str, layer: LayerMemory, info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    layer.tail_start = int(info["tail_start"])
    _fill(layer.tail_k, tensors[f"{prefix}.tail_k"])
    _fill(layer.tail_v, tensors[f"{prefix}.tail_v"])
    _fill(layer.init_k, tensors[f"{prefix}.init_k"])
    _fill(layer.init_v, tensors[f"{prefix}.init_v"])
    if layer.tail_mass is not None:
        _fill(layer.tail_mass, tensors[f"{prefix}.tail_mass"])
    layer.contiguity = [int(x) for x in info["contiguity"]]
    layer.last_retrieved = [int(x) for x in info["last_retrieved"]]
    if info["events"]:
        if layer.store is None:
            raise DataError(f"{prefix}: the snapshot holds events for a layer without an event store")
        archive, reprs = tensors[f"{prefix}.archive"], tensors[f"{prefix}.reprs"]
        for i, (size, start, position) in enumerate(zip(info["sizes"], info["starts"], info["positions"], strict=True)):
            kv = archive[start : start + size].to(layer.store.device, layer.store.dtype)  # [n, 2, Hkv, D]
            layer.store.add(kv[:, 0].transpose(0, 1), kv[:, 1].transpose(0, 1), reprs[i], int(position))


def load_snapshot(memory: EpisodicMemory, directory: str | Path) -> tuple[EMCache, dict[str, Any]]:
    """A new cache of ``memory`` holding the saved state, and the ``extra`` metadata saved with it.

    Continuing from the returned cache gives the same tokens as continuing the cache that was saved.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    _check_compatible(manifest, memory, directory)
    tensor_path = directory / str(manifest.get("tensors"))
    try:
        tensors = load_file(str(tensor_path))
    except (OSError, SafetensorError) as exc:
        raise DataError(f"{tensor_path}: cannot read the snapshot's tensors ({exc})") from None
    cache = memory.new_cache()
    try:
        infos = manifest["sequences"]
        cache.sequences = [memory.new_sequence(len(infos)) for _ in infos]
        for b, (seq, info) in enumerate(zip(cache.sequences, infos, strict=True)):
            prefix = f"seq{b}"
            seq.length, seq.decided = int(info["length"]), int(info["decided"])
            seq.flags = [bool(f) for f in info["flags"]]
            seq._aux_start = int(info["aux_start"])
            seq.surprise_history = tensors[f"{prefix}.surprise_history"].float()
            _fill(seq._ids, tensors[f"{prefix}.ids"])
            _fill(seq._hidden, tensors[f"{prefix}.hidden"])
            seq.generator.set_state(tensors[f"{prefix}.generator"])
            for i, (layer, layer_info) in enumerate(zip(seq.layers, info["layers"], strict=True)):
                _restore_layer(f"{prefix}.layer{i}", layer, layer_info, tensors)
        cache.seq_length = int(manifest["seq_length"])
        if "unfed" in tensors:
            cache.unfed = tensors["unfed"].to(next(memory.model.parameters()).device)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        cache.close()
        raise DataError(f"{directory}: the snapshot is incomplete or inconsistent ({exc})") from None
    return cache, dict(manifest.get("extra") or {})
