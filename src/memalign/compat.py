"""The reference project's API: EM-LLM's (and InfLLM's) ``patch_hf``, its parameter names and its YAML files.

This module exists so that code and configs written for the reference implementation
(em-llm/EM-LLM-model, descended from thunlp/InfLLM) run on memalign unchanged; memalign's own API is
:class:`memalign.memory.EpisodicMemory` with an :class:`~memalign.memory.EMConfig`.

``patch_hf(model, attn_type="em_llm", n_local=..., n_init=..., ...)`` attaches episodic memory and
returns the model; afterwards a plain ``model.generate(input_ids, ...)`` works for any prompt length
(prefill is chunked by ``exc_block_size``). The reference YAML ``model:`` sections load unchanged
(:func:`load_reference_config`). Options that only tuned the reference's own GPU/CPU plumbing are
accepted and ignored; options that would change results in a way memalign does not implement raise.
Every value that is used is checked as :class:`~memalign.memory.EMConfig` checks its fields (an integer
stays an integer: ``n_local=32.5`` or ``exc_block_size=0`` is an error, never rounded or replaced by a
default).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from memalign.errors import ConfigError
from memalign.memory import EMConfig, EpisodicMemory
from memalign.memory.config_file import read_yaml_mapping, require_mapping
from memalign.memory.refinement import REFINEMENT_METRICS
from memalign.memory.validate import check_bool, check_float
from memalign.registry import Registry

# attn_type -> the EMConfig fields that define it (names and spellings of the reference).
ATTENTION_TYPES: Registry[dict[str, Any]] = Registry(
    "attn_type",
    normalize=lambda name: name.lower().replace("-", "_"),
    hint="(or origin / full / none for unchanged attention)",
)
ATTENTION_TYPES.add("em_llm", {}, aliases=("emllm",))
ATTENTION_TYPES.add("inf_llm", {"segmentation": "uniform"}, aliases=("infllm",))
ATTENTION_TYPES.add("stream_llm", {"n_mem": 0}, aliases=("streaming",))
_FULL_ATTENTION = {"origin", "full", "none"}

# Options of the reference that only configure its plumbing (GPU slot pools, offload thresholds, streams).
_IGNORED = {
    "type",
    "path",
    "max_cached_block",
    "min_free_cpu_memory",
    "disk_offload_threshold",
    "vector_offload_threshold",
    "async_global_stream",
    "pin_memory",
    "perhead",
    "block_similarity_topk",
    "infini_attention",
    "use_hf_acc",
    "attn_implementation",
    "tokenizer_path",
    "allow_disk_offload",
    "disk_offload_dir",
    "vector_offload",
    "world_size",
    "fattn",
    "faiss",
    "chunk_topk_calc",
    "cache_strategy",
    "score_decay",
    "compute_ppl",
    "return_block_size",
    "logging",
    "verbose",
    "topk",
}
# Options whose effect memalign reproduces with the model's own rotary module instead.
_ROPE = {"base", "distance_scale"}
# memalign's EMConfig field -> the reference's parameter name, where they differ (for error messages).
_REFERENCE_NAMES = {"chunk_size": "exc_block_size", "gamma": "surprisal_threshold_gamma"}
_SPLITTERS = {"surprisal": "surprise", "surprise": "surprise", "random": "random"}


def _flag(kw: dict[str, Any], name: str, default: bool = False) -> bool:
    value = kw.pop(name, default)
    check_bool("patch_hf", name, value)
    return value


def _section(kw: dict[str, Any], name: str) -> dict[str, Any]:
    value = kw.pop(name, None)
    return {} if value is None else dict(require_mapping(value, f"patch_hf {name}"))


def em_config_from_reference(**kwargs: Any) -> EMConfig:
    """Map reference parameter names to an :class:`EMConfig`; unspecified values follow the given ones."""
    kw = dict(kwargs)
    fields: dict[str, Any] = {}
    for name in ("n_init", "n_local", "n_mem", "min_block_size", "max_block_size", "repr_topk"):
        if name in kw:
            fields[name] = kw.pop(name)  # EMConfig checks the type: 32.5 or "32" is refused, not rounded
    chunk, alias = kw.pop("exc_block_size", None), kw.pop("chunk_size", None)
    if chunk is not None and alias is not None and chunk != alias:
        raise ConfigError(
            f"patch_hf got exc_block_size={chunk!r} and chunk_size={alias!r}; they are the same "
            "setting (the prefill chunk), pass one"
        )
    chunk = chunk if chunk is not None else alias
    n_local = fields.get("n_local", EMConfig.n_local)
    # Defaults scale with a small window; a bad n_local is left for EMConfig to name.
    small = n_local if isinstance(n_local, int) and not isinstance(n_local, bool) and n_local > 0 else EMConfig.n_local
    fields["chunk_size"] = chunk if chunk is not None else min(512, small)
    fields.setdefault("max_block_size", min(128, small))
    max_block = fields["max_block_size"]
    max_block = max_block if isinstance(max_block, int) and not isinstance(max_block, bool) else 128
    fields.setdefault("min_block_size", min(8, max_block))
    fields.setdefault("n_mem", max(min(small, 4096), max_block))
    fields.setdefault("n_init", min(128, small))
    if "surprisal_threshold_gamma" in kw:
        fields["gamma"] = kw.pop("surprisal_threshold_gamma")
    if _flag(kw, "uniform_blocks"):
        fields["segmentation"] = "uniform"
    splitter = kw.pop("em_splitter", None)
    if splitter is not None:
        if splitter not in _SPLITTERS:
            raise ConfigError(f"em_splitter={splitter!r} is not supported (surprisal, random)")
        if _SPLITTERS[splitter] == "random":
            fields["segmentation"] = "random"
    if _flag(kw, "random_topk_blocks"):
        raise ConfigError("random_topk_blocks (random retrieval ablation) is not implemented in memalign")
    refine = _section(kw, "similarity_refinement_kwargs")
    for key in ("similarity_refinement", "refine_with_buffer", "refine_from_layer", "similarity_metric"):
        if key in kw:
            refine[key] = kw.pop(key)
    if _flag(refine, "similarity_refinement"):
        metric = refine.get("similarity_metric", "modularity")
        if metric not in REFINEMENT_METRICS:
            raise ConfigError(f"similarity_metric={metric!r} is not supported ({', '.join(REFINEMENT_METRICS)})")
        fields["refinement"] = metric
        fields["refine_from_layer"] = refine.get("refine_from_layer", 20)
    contiguity = _section(kw, "contiguity_buffer_kwargs")
    for key in ("use_contiguity_buffer", "contiguity_buffer_size"):
        if key in kw:
            contiguity[key] = kw.pop(key)
    if _flag(contiguity, "use_contiguity_buffer"):
        fields["contiguity_fraction"] = _contiguity_fraction(
            contiguity.get("contiguity_buffer_size", 0.3), fields["n_mem"]
        )
    rope_opts = _ROPE & set(kw)
    if rope_opts:
        warnings.warn(
            f"ignoring {sorted(rope_opts)}: memalign takes RoPE from the model's own rotary module "
            "(keeps llama3/yarn/longrope scaling)",
            stacklevel=3,
        )
    for key in rope_opts | (_IGNORED & set(kw)):
        kw.pop(key)
    if kw:
        raise ConfigError(f"unknown EM-LLM parameter(s): {', '.join(sorted(kw))}")
    try:
        return EMConfig(**fields)
    except ConfigError as exc:  # name the setting the caller passed, not only memalign's field
        message = str(exc)
        for field, reference in _REFERENCE_NAMES.items():
            message = message.replace(f"EMConfig.{field} ", f"patch_hf {reference} (EMConfig.{field}) ")
        raise ConfigError(message) from None


def _contiguity_fraction(size: Any, n_mem: Any) -> float:
    """The reference's ``contiguity_buffer_size``: a share of ``n_mem`` below 1, else a token count."""
    check_float("patch_hf", "contiguity_buffer_size", size, 0.0, float("inf"), high_open=True)
    if size < 1:
        return float(size)
    if not isinstance(n_mem, int) or isinstance(n_mem, bool) or size >= n_mem:
        raise ConfigError(
            f"patch_hf contiguity_buffer_size={size!r} tokens must be below n_mem={n_mem!r} (or a share of it below 1)"
        )
    return size / n_mem


def patch_hf(model: PreTrainedModel, attn_type: str = "em_llm", **kwargs: Any) -> PreTrainedModel:
    """Enable episodic memory on ``model`` in place (reference API); returns the model.

    ``attn_type``: ``em_llm`` (surprise events), ``inf_llm`` (fixed blocks), ``stream_llm`` (sinks + window)
    or ``origin`` (unchanged). Undo with :func:`unpatch_hf`. Every argument is checked before the model is
    touched.
    """
    if not isinstance(model, PreTrainedModel):
        raise ConfigError(f"patch_hf needs a transformers PreTrainedModel, got {type(model).__name__}")
    if not isinstance(attn_type, str):
        raise ConfigError(f"patch_hf attn_type must be a string, got {attn_type!r} ({type(attn_type).__name__})")
    if attn_type.lower() in _FULL_ATTENTION:
        return model
    config = em_config_from_reference(**kwargs).replace(**ATTENTION_TYPES[attn_type])
    memory = EpisodicMemory(model, config)  # checks the config against the model before detaching anything
    unpatch_hf(model)
    model.memalign_memory = memory.attach()
    return model


def unpatch_hf(model: PreTrainedModel) -> PreTrainedModel:
    """Detach what :func:`patch_hf` attached (a no-op on an unpatched model); returns the model."""
    memory = getattr(model, "memalign_memory", None)
    if memory is not None:
        memory.detach()
        del model.memalign_memory
    return model


def load_reference_config(path: str | Path) -> dict[str, Any]:
    """Read a reference EM-LLM YAML; returns ``{"attn_type": ..., **model_section, "exc_block_size": ...}``."""
    data = read_yaml_mapping(path, "EM-LLM config")
    model = dict(require_mapping(data.get("model", {}), f"EM-LLM config {str(path)!r} key model"))
    attn_type = model.pop("type", "em-llm")
    if "chunk_size" in data and "exc_block_size" not in model:
        model["exc_block_size"] = data["chunk_size"]
    return {"attn_type": attn_type, **model}
