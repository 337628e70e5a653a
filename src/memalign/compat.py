"""Seed-compatible entry points: ``patch_hf`` with the reference EM-LLM/InfLLM parameter names.

``patch_hf(model, attn_type="em_llm", n_local=..., n_init=..., ...)`` attaches episodic memory and
returns the model; afterwards a plain ``model.generate(input_ids, ...)`` works for any prompt length
(prefill is chunked by ``exc_block_size``). The reference YAML ``model:`` sections load unchanged
(:func:`load_reference_config`); options that only tuned the reference's own GPU/CPU plumbing are
accepted and ignored, options that would change results in a way memalign does not implement raise.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml
from transformers import PreTrainedModel

from memalign.errors import ConfigError
from memalign.memory import EMConfig, EpisodicMemory

_ATTN_TYPES = {
    "em_llm": {}, "em-llm": {}, "emllm": {},
    **{name: {"segmentation": "uniform"} for name in ("inf_llm", "inf-llm", "infllm")},
    "stream_llm": {"n_mem": 0}, "stream-llm": {"n_mem": 0}, "streaming": {"n_mem": 0},
}
_FULL_ATTENTION = {"origin", "full", "none"}

# Options of the reference that only configure its plumbing (GPU slot pools, offload thresholds, streams).
_IGNORED = {
    "type", "path", "max_cached_block", "min_free_cpu_memory", "disk_offload_threshold", "vector_offload_threshold",
    "async_global_stream", "pin_memory", "perhead", "block_similarity_topk", "infini_attention", "use_hf_acc",
    "attn_implementation", "tokenizer_path", "allow_disk_offload", "disk_offload_dir", "vector_offload",
    "world_size", "fattn", "faiss", "chunk_topk_calc", "cache_strategy", "score_decay", "compute_ppl",
    "return_block_size", "logging", "verbose", "topk",
}
# Options whose effect memalign reproduces with the model's own rotary module instead.
_ROPE = {"base", "distance_scale"}


def em_config_from_reference(**kwargs: Any) -> EMConfig:
    """Map reference parameter names to an :class:`EMConfig`; unspecified values follow the given ones."""
    kw = dict(kwargs)
    fields: dict[str, Any] = {}
    for name in ("n_init", "n_local", "n_mem", "min_block_size", "max_block_size", "repr_topk"):
        if name in kw:
            fields[name] = int(kw.pop(name))
    chunk = kw.pop("exc_block_size", None) or kw.pop("chunk_size", None)
    n_local = fields.get("n_local", EMConfig.n_local)
    fields["chunk_size"] = int(chunk) if chunk else min(512, n_local)
    fields.setdefault("max_block_size", min(128, n_local))
    fields.setdefault("min_block_size", min(8, fields["max_block_size"]))
    fields.setdefault("n_mem", max(min(n_local, 4096), fields["max_block_size"]))
    fields.setdefault("n_init", min(128, n_local))
    if "surprisal_threshold_gamma" in kw:
        fields["gamma"] = float(kw.pop("surprisal_threshold_gamma"))
    if kw.pop("uniform_blocks", False):
        fields["segmentation"] = "uniform"
    splitter = kw.pop("em_splitter", None)
    if splitter in ("random",):
        fields["segmentation"] = "random"
    elif splitter not in (None, "surprisal", "surprise"):
        raise ConfigError(f"em_splitter={splitter!r} is not supported (surprisal, random)")
    if kw.pop("random_topk_blocks", False):
        raise ConfigError("random_topk_blocks (random retrieval ablation) is not implemented in memalign")
    refine = dict(kw.pop("similarity_refinement_kwargs", None) or {})
    for key in ("similarity_refinement", "refine_with_buffer", "refine_from_layer", "similarity_metric"):
        if key in kw:
            refine[key] = kw.pop(key)
    if refine.get("similarity_refinement"):
        metric = refine.get("similarity_metric", "modularity")
        if metric not in ("modularity", "conductance"):
            raise ConfigError(f"similarity_metric={metric!r} is not supported (modularity, conductance)")
        fields["refinement"] = metric
        fields["refine_from_layer"] = int(refine.get("refine_from_layer", 20))
    contiguity = dict(kw.pop("contiguity_buffer_kwargs", None) or {})
    for key in ("use_contiguity_buffer", "contiguity_buffer_size"):
        if key in kw:
            contiguity[key] = kw.pop(key)
    if contiguity.get("use_contiguity_buffer"):
        size = float(contiguity.get("contiguity_buffer_size", 0.3))
        fields["contiguity_fraction"] = size if size < 1 else min(size / max(fields["n_mem"], 1), 0.99)
    rope_opts = _ROPE & set(kw)
    if rope_opts:
        warnings.warn(f"ignoring {sorted(rope_opts)}: memalign takes RoPE from the model's own rotary module "
                      "(keeps llama3/yarn/longrope scaling)", stacklevel=3)
    for key in rope_opts | (_IGNORED & set(kw)):
        kw.pop(key)
    if kw:
        raise ConfigError(f"unknown EM-LLM parameter(s): {', '.join(sorted(kw))}")
    return EMConfig(**fields)


def patch_hf(model: PreTrainedModel, attn_type: str = "em_llm", **kwargs: Any) -> PreTrainedModel:
    """Enable episodic memory on ``model`` in place (reference API); returns the model.

    ``attn_type``: ``em_llm`` (surprise events), ``inf_llm`` (fixed blocks), ``stream_llm`` (sinks + window)
    or ``origin`` (unchanged). Undo with :func:`unpatch_hf`.
    """
    key = attn_type.lower()
    if key in _FULL_ATTENTION:
        return model
    if key not in _ATTN_TYPES:
        raise ConfigError(f"unknown attn_type {attn_type!r}; use one of em_llm, inf_llm, stream_llm, origin")
    config = em_config_from_reference(**kwargs).replace(**_ATTN_TYPES[key])
    unpatch_hf(model)
    memory = EpisodicMemory(model, config).attach()
    model.memalign_memory = memory
    return model


def unpatch_hf(model: PreTrainedModel) -> PreTrainedModel:
    memory = getattr(model, "memalign_memory", None)
    if memory is not None:
        memory.detach()
        del model.memalign_memory
    return model


def load_reference_config(path: str | Path) -> dict[str, Any]:
    """Read a reference EM-LLM YAML; returns ``{"attn_type": ..., **model_section, "chunk_size": ...}``."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    model = dict(data.get("model", {}))
    attn_type = model.pop("type", "em-llm")
    if "chunk_size" in data and "exc_block_size" not in model:
        model["exc_block_size"] = data["chunk_size"]
    return {"attn_type": attn_type, **model}
