"""``load_model``: the one way memalign obtains a (model, tokenizer) pair.

Accepts a packaged preset name, a ``.gguf`` file, a local Hugging Face directory, or a hub id, and
turns every failure a user can cause (typo, missing file, no network, unsupported architecture) into
one :class:`~memalign.errors.MemalignError` line that says what to do.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from memalign.errors import MemalignError, ModelNotFoundError
from memalign.models.arch import get_arch_spec
from memalign.models.presets import PRESETS, ensure_preset
from memalign.progress import status

_TOKENIZER_KWARGS = ("gguf_file", "revision", "token", "local_files_only")
_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
           "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """``auto``: bf16 where it is fast (GPUs with bf16, CPUs with AVX512-BF16/AMX), else fp32.

    On CPUs without native bf16 (e.g. AVX2-only) bf16 matmuls are emulated and several times slower
    than fp32 (measured 7x on an AVX2 EPYC), so ``auto`` must look at the hardware.
    """
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise MemalignError(f"unknown dtype {dtype!r}; use auto or one of {', '.join(_DTYPES)}") from None


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1


def resolve_source(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """(what to pass to from_pretrained, extra kwargs) for any accepted model reference.

    ``tiny:<kind>`` names a random-init test model (see :mod:`memalign.testing`), for demos and tests.
    """
    if name_or_path.startswith("tiny:"):
        return name_or_path, {}
    if name_or_path in PRESETS:
        return str(ensure_preset(name_or_path)), {}
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {path} does not exist")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory but has no config.json (not a Hugging Face model)")
        return str(path), {}
    if _looks_like_path(name_or_path):
        raise ModelNotFoundError(
            f"model {name_or_path!r} not found: no such file or directory. Pass a preset "
            f"({', '.join(PRESETS)}), a .gguf file, a local model directory or a Hugging Face hub id"
        )
    return name_or_path, hub_kwargs(name_or_path)


def hub_kwargs(repo_id: str) -> dict[str, Any]:
    """``local_files_only=True`` when the hub cannot be reached, so offline use of a cached model works
    and an uncached one fails at once with our message instead of minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"} or not _hub_reachable():
        return {"local_files_only": True}
    return {}


@functools.cache
def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_model(
    name_or_path: str,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
    **from_pretrained_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` in eval mode on ``device``; the architecture must be supported.

    ``name_or_path``: a preset (``memalign models`` lists them), a ``.gguf`` file, a local HF
    directory, or a hub id such as ``Qwen/Qwen3-8B``.
    """
    torch_dtype = resolve_dtype(dtype, device)
    source, extra = resolve_source(name_or_path)
    if source.startswith("tiny:"):
        from memalign.testing import tiny_model, tiny_tokenizer

        model = tiny_model(source.removeprefix("tiny:"), dtype=torch_dtype, attn_implementation=attn_implementation)
        return model.to(device), tiny_tokenizer()
    kwargs = {**extra, **from_pretrained_kwargs}
    transformers_logging.disable_progress_bar()
    try:
        with status(f"Loading {name_or_path}"):
            tokenizer = AutoTokenizer.from_pretrained(source, **{k: v for k, v in kwargs.items()
                                                                 if k in _TOKENIZER_KWARGS})
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch_dtype, attn_implementation=attn_implementation, **kwargs
            )
    except OSError as exc:
        if source == name_or_path:
            raise ModelNotFoundError(hub_error_message(name_or_path, exc)) from None
        raise ModelNotFoundError(f"could not load {name_or_path!r}: {_first_line(exc)}") from None
    get_arch_spec(model)  # refuse unsupported architectures here, with the supported list
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device).eval()
    model.name_or_path = name_or_path  # presets: keep the preset name, not the cache path
    return model, tokenizer


def hub_error_message(name: str, exc: BaseException) -> str:
    return (
        f"could not load {name!r} from the Hugging Face hub ({_first_line(exc)}). Check the id and your "
        "network (or HF_HUB_OFFLINE / HF_TOKEN), pass a local directory or .gguf file, or use a packaged "
        f"preset: {', '.join(PRESETS)}"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
