"""Describe a model's architecture without loading its weights (config + a meta-device skeleton)."""

from __future__ import annotations

from typing import Any

import torch

from memalign.errors import ModelFileError, ModelNotFoundError
from memalign.models.arch import get_arch_spec
from memalign.models.file_checks import first_line
from memalign.models.loading import hub_error_message, resolve_source


def describe_model(name_or_path: str) -> dict[str, Any]:
    """ArchSpec fields plus parameter count and stored dtype, for ``memalign info``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source, extra = resolve_source(name_or_path)
    if source.startswith("tiny:"):
        from memalign.testing import tiny_config

        config = tiny_config(source.removeprefix("tiny:"))
    else:
        try:
            config = AutoConfig.from_pretrained(source, **extra)
        except OSError as exc:
            offline = bool(extra.get("local_files_only"))
            msg = hub_error_message(name_or_path, exc, offline) if source == name_or_path else first_line(exc)
            raise ModelNotFoundError(msg) from None
        except ValueError as exc:
            if "gguf_file" not in extra:
                raise
            raise ModelFileError(f"transformers cannot read the GGUF file {name_or_path} ({first_line(exc)})") from None
    spec = get_arch_spec(config)  # unsupported architectures fail here, before building anything
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    spec = get_arch_spec(skeleton)  # head_dim read off the attention modules
    info = {"model": name_or_path, **spec.to_dict()}
    info["parameters"] = sum(p.numel() for p in skeleton.parameters())
    dtype = getattr(config, "dtype", None)
    info["dtype"] = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    return info
