"""Refuse a damaged model file before transformers reads it.

An empty, truncated or mislabelled file otherwise fails deep inside numpy, the gguf reader or the
safetensors deserializer with a message that does not name the file (``cannot reshape array of size
15240``). These checks read headers and sizes, never the weights: milliseconds for safetensors, about a
second for a GGUF with a large vocabulary (its metadata is parsed once more, next to the 10-60 s that
transformers then spends dequantising). They raise :class:`~memalign.errors.ModelFileError` naming the
file and what to do.
"""

from __future__ import annotations

import json
import logging
import struct
import zipfile
from pathlib import Path

from memalign.errors import ModelFileError, ModelNotFoundError

logger = logging.getLogger(__name__)

_REDOWNLOAD = "download or convert it again"


def check_gguf(path: Path) -> None:
    """``path`` is a complete GGUF file: magic, readable metadata, every tensor's bytes present."""
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"GGUF file {path} is empty; {_REDOWNLOAD}")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelFileError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as exc:  # any parse failure of an arbitrary byte string means "damaged file"
        logger.debug("gguf reader failed on %s", path, exc_info=True)
        raise ModelFileError(f"GGUF file {path} is damaged or truncated ({first_line(exc)}); {_REDOWNLOAD}") from None
    if not reader.tensors:
        raise ModelFileError(f"GGUF file {path} contains no tensors; {_REDOWNLOAD}")
    if end > size:
        raise ModelFileError(f"GGUF file {path} is truncated: {size:,} bytes, its tensors need {end:,}; {_REDOWNLOAD}")


def check_checkpoint_dir(directory: Path) -> None:
    """The weight files of a Hugging Face model directory are complete (safetensors, sharded or not,
    and ``pytorch_model*.bin``); a directory with none of them is left for transformers to report."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ModelFileError(f"{index} is not a valid safetensors index ({first_line(exc)})") from None
        for shard in shards:
            if not (directory / shard).is_file():
                raise ModelFileError(f"{directory / shard} is missing (listed in {index.name}); {_REDOWNLOAD}")
    for file in sorted(directory.glob("*.safetensors")):
        check_safetensors(file)
    for file in sorted(directory.glob("pytorch_model*.bin")):
        _check_torch_zip(file)


def check_safetensors(path: Path) -> None:
    """A safetensors file's header parses and its tensors cover the file exactly, as the format requires."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > size - 8:
                raise ValueError(f"header of {header_len:,} bytes in a {size:,}-byte file")
            header = json.loads(fh.read(header_len))
        ends = [int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error) as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file ({first_line(exc)}); {_REDOWNLOAD}") from None
    expected = 8 + header_len + max(ends, default=0)
    if expected != size:
        state = "truncated" if size < expected else "longer than its header says"
        raise ModelFileError(f"{path} is {state}: {size:,} bytes, expected {expected:,}; {_REDOWNLOAD}")


def _check_torch_zip(path: Path) -> None:
    # torch.save writes a zip archive whose directory sits at the end, so a truncated file has none.
    # Checkpoints from before torch 1.6 are a bare pickle (first byte 0x80) and are left to torch.
    with path.open("rb") as fh:
        legacy = fh.read(1) == b"\x80"
    if not legacy and not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is truncated or not a PyTorch checkpoint; {_REDOWNLOAD}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for a one-line user error."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def require_accelerate() -> None:
    """transformers dequantises GGUF files through accelerate; say so before it fails deep inside a load."""
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise ModelNotFoundError(
            "loading a .gguf file needs the accelerate package (a memalign dependency): pip install accelerate"
        ) from None
