"""``load_model``: the one way memalign obtains a (model, tokenizer) pair.

Accepts a packaged preset name, a ``.gguf`` file, a local Hugging Face directory, or a hub id, and
turns every failure a user can cause (typo, missing file, no network, unsupported architecture) into
one :class:`~memalign.errors.MemalignError` line that says what to do.
"""

from __future__ import annotations

import difflib
import functools
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

from memalign.errors import ModelFileError, ModelNotFoundError
from memalign.models.arch import get_arch_spec
from memalign.models.file_checks import check_checkpoint_dir, check_gguf, first_line, require_accelerate
from memalign.models.placement import resolve_device, resolve_dtype
from memalign.models.presets import PRESETS, ensure_preset
from memalign.progress import status

if TYPE_CHECKING:  # transformers is imported when a model is loaded: `memalign --help` and input errors stay fast
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["hub_error_message", "hub_kwargs", "load_model", "resolve_dtype", "resolve_source"]

_TOKENIZER_KWARGS = ("gguf_file", "revision", "token", "local_files_only")


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
        check_gguf(path)
        require_accelerate()
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory but has no config.json (not a Hugging Face model)")
        check_checkpoint_dir(path)
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
    directory, or a hub id such as ``Qwen/Qwen3-8B``. Device, dtype and the model files are checked
    before anything is loaded; every failure a user can cause is a :class:`~memalign.errors.MemalignError`.
    """
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    source, extra = resolve_source(name_or_path)
    if source.startswith("tiny:"):
        from memalign.testing import tiny_model, tiny_tokenizer

        model = tiny_model(source.removeprefix("tiny:"), dtype=torch_dtype, attn_implementation=attn_implementation)
        return model.to(target), tiny_tokenizer()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    kwargs = {**extra, **from_pretrained_kwargs}
    transformers_logging.disable_progress_bar()
    try:
        with status(f"Loading {name_or_path}"):
            tokenizer = AutoTokenizer.from_pretrained(
                source, **{k: v for k, v in kwargs.items() if k in _TOKENIZER_KWARGS}
            )
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch_dtype, attn_implementation=attn_implementation, **kwargs
            )
    except OSError as exc:
        if source == name_or_path:
            offline = bool(kwargs.get("local_files_only"))
            raise ModelNotFoundError(hub_error_message(name_or_path, exc, offline)) from None
        raise ModelNotFoundError(f"could not load {name_or_path!r}: {first_line(exc)}") from None
    except ValueError as exc:
        if "gguf_file" not in extra:
            raise
        # A well-formed GGUF that transformers cannot map (an architecture or tensor type it lacks).
        raise ModelFileError(f"transformers cannot load the GGUF file {name_or_path} ({first_line(exc)})") from None
    get_arch_spec(model)  # refuse unsupported architectures here, with the supported list
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(target).eval()
    model.name_or_path = name_or_path  # presets: keep the preset name, not the cache path
    return model, tokenizer


def hub_error_message(name: str, exc: BaseException, offline: bool = False) -> str:
    """What to do when ``name`` was taken for a hub id and could not be loaded (offline, typo, gated)."""
    close = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.6)
    guess = f"Did you mean the preset {close[0]!r}? " if close else ""
    alternatives = f"pass a local directory or .gguf file, or use a packaged preset: {', '.join(PRESETS)}"
    if offline:
        return (
            f"could not load {name!r}: it is not in the local Hugging Face cache and the Hugging Face hub "
            f"cannot be reached (no network, or HF_HUB_OFFLINE is set). {guess}Download it where the hub is "
            f"reachable (`hf download {name}`) and copy the cache over, or {alternatives}"
        )
    return (
        f"could not load {name!r} from the Hugging Face hub ({first_line(exc)}). {guess}Check the id "
        f"(and HF_TOKEN for gated models), or {alternatives}"
    )
