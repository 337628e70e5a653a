"""Fold a steering into ``o_proj`` biases and save a plain Hugging Face checkpoint that keeps it.

Adding ``s`` to the o_proj input at every position equals adding ``W_o @ s`` to its output, i.e. a bias.
The catch (PAlign's fork and ITI's bake both hit it): these models' ``o_proj`` has no bias, so a bias
saved into the weights is dropped or rejected on reload unless the *config* declares one. Which config
field creates an o_proj bias is found by building the architecture on the meta device with each
candidate field switched on (transformers' own modeling code is the authority); biases that field
also creates elsewhere (q/k/v for Llama/Qwen3/Gemma3) are saved as zeros, so the checkpoint reloads with
exactly the steered behaviour. Architectures whose o_proj bias is hard-wired off (Qwen2, Mistral, Phi-3
in transformers 5.23) are refused, except that Qwen2 and Mistral without sliding-window layers can be
re-expressed exactly as a Llama checkpoint (``as_llama=True``: same weights and names, Llama's
``attention_bias`` gives q/k/v/o biases; Qwen2's q/k/v biases carry over, Mistral's are zeros).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from memalign.errors import ConfigError, UnsupportedArchitectureError
from memalign.models.arch import text_config
from memalign.persona.artifact import save_steering
from memalign.persona.steering import Steering

O_PROJ_BIAS_FIELDS = ("attention_bias",)
BAKE_INFO = "memalign-bake.json"
# model_type -> does its decoder compute exactly what a Llama decoder with attention_bias computes
# (given the same weights), provided no layer uses a sliding window.
LLAMA_EXPRESSIBLE = ("qwen2", "mistral")
_LLAMA_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_parameters",
    "tie_word_embeddings",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


def _param_names(config: PretrainedConfig) -> set[str]:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name for name, _ in model.named_parameters()}


def o_proj_bias_field(model: PreTrainedModel) -> tuple[str, set[str]]:
    """(config field that gives o_proj a bias, parameter names it adds); raises if no field does."""
    from memalign.models.arch import get_arch_spec

    spec = get_arch_spec(model)
    o_proj_bias = f"{spec.family.layers_path}.0.{spec.family.attention_attr}.{spec.family.o_proj_attr}.bias"
    base = {name for name, _ in model.named_parameters()}
    for field in O_PROJ_BIAS_FIELDS:
        cfg = text_config(model.config)
        if not hasattr(cfg, field):
            continue
        flagged = copy.deepcopy(model.config)
        setattr(text_config(flagged), field, True)
        added = _param_names(flagged) - base
        if o_proj_bias in added or o_proj_bias in base:
            return field, added
    raise UnsupportedArchitectureError(
        f"{spec.model_type}: transformers builds o_proj without a bias and no config field "
        f"({', '.join(O_PROJ_BIAS_FIELDS)}) turns one on, so a baked checkpoint would silently lose the "
        "steering. Apply it at runtime instead (memalign.persona.load_steering(...).apply(model), or "
        "`memalign chat --persona DIR`)"
        + (
            ", or bake it as an equivalent Llama checkpoint (as_llama=True, --as-llama)"
            if spec.model_type in LLAMA_EXPRESSIBLE
            else ""
        )
    )


def bake(
    model: PreTrainedModel,
    steering: Steering,
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
    alpha: float | None = None,
    as_llama: bool = False,
) -> Path:
    """Save ``model`` with ``steering`` (at ``alpha``, default its own) folded into o_proj biases.

    Only the ``all`` positions policy can be baked (a bias acts at every position). The model is left
    unchanged: biases and config are swapped in for ``save_pretrained`` and restored afterwards.
    ``as_llama`` writes a Qwen2/Mistral model as the equivalent Llama checkpoint (see the module docstring).
    """
    if steering.positions != "all":
        raise ConfigError(
            f"a bias acts at every position, but this steering uses positions={steering.positions!r}; "
            "refit or re-save it with positions='all' to bake, or apply it as a hook"
        )
    if getattr(model.config, "quantization_config", None) is not None:
        raise ConfigError("cannot bake into a quantized/GGUF-loaded model; load a plain checkpoint (presets are)")
    spec = steering.check_model(model)
    if as_llama:
        return _bake_as_llama(model, steering, Path(out_dir), tokenizer, alpha)
    field, added = o_proj_bias_field(model)
    odd = sorted(
        n
        for n in added
        if not n.endswith(".bias") or not isinstance(model.get_submodule(n.rsplit(".", 1)[0]), nn.Linear)
    )
    if odd:
        raise UnsupportedArchitectureError(f"setting {field} also adds {odd[0]}, which bake does not know how to fill")
    out_dir = Path(out_dir)
    shifts = steering.layer_shifts(alpha)
    new_config = copy.deepcopy(model.config)
    setattr(text_config(new_config), field, True)
    originals: dict[str, nn.Parameter | None] = {}
    o_proj_names = {
        f"{spec.family.layers_path}.{i}.{spec.family.attention_attr}.{spec.family.o_proj_attr}"
        for i in range(spec.num_layers)
    }
    old_config = model.config
    try:
        with torch.no_grad():
            for name in sorted({n.rsplit(".", 1)[0] for n in added} | o_proj_names):
                module = model.get_submodule(name)
                if not isinstance(module, nn.Linear):
                    continue
                originals[name] = module.bias
                weight = module.weight
                bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device)
                if module.bias is not None:
                    bias += module.bias.float()
                layer = _layer_of(name, o_proj_names, spec.family.layers_path)
                if layer is not None and layer in shifts:
                    bias += weight.float() @ shifts[layer].to(weight.device)
                module.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=False)
        model.config = new_config
        model.save_pretrained(out_dir)
    finally:
        model.config = old_config
        for name, bias in originals.items():
            model.get_submodule(name).bias = bias
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    save_steering(steering.with_alpha(steering.alpha if alpha is None else alpha), out_dir / "steering")
    info = {
        "baked_with": "memalign",
        "config_field": field,
        "alpha": steering.alpha if alpha is None else alpha,
        "steered_layers": sorted(shifts),
    }
    (out_dir / BAKE_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out_dir


def _layer_of(name: str, o_proj_names: set[str], layers_path: str) -> int | None:
    if name not in o_proj_names:
        return None
    return int(name.removeprefix(layers_path + ".").split(".", 1)[0])


def _bake_as_llama(
    model: PreTrainedModel,
    steering: Steering,
    out_dir: Path,
    tokenizer: PreTrainedTokenizerBase | None,
    alpha: float | None,
) -> Path:
    """Write the steered model as a LlamaForCausalLM checkpoint (config + safetensors, no second model in memory)."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from memalign.models.arch import get_arch_spec

    spec = get_arch_spec(model)
    if spec.model_type not in LLAMA_EXPRESSIBLE:
        raise UnsupportedArchitectureError(
            f"{spec.model_type} cannot be re-expressed as Llama; only {', '.join(LLAMA_EXPRESSIBLE)} can"
        )
    if spec.sliding_window is not None:
        raise UnsupportedArchitectureError(
            f"this {spec.model_type} model uses sliding-window layers, which a Llama checkpoint cannot express"
        )
    cfg = model.config
    config = LlamaConfig(
        **{f: getattr(cfg, f) for f in _LLAMA_FIELDS if hasattr(cfg, f)},
        head_dim=spec.head_dim,
        attention_bias=True,
        mlp_bias=False,
        architectures=["LlamaForCausalLM"],
    )
    shifts = steering.layer_shifts(alpha)
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    for i in range(spec.num_layers):
        prefix = f"model.layers.{i}.self_attn."
        o_proj = spec.o_proj(model, i)
        bias = torch.zeros(o_proj.out_features, dtype=torch.float32, device=o_proj.weight.device)
        if o_proj.bias is not None:
            bias += o_proj.bias.float()
        if i in shifts:
            bias += o_proj.weight.float() @ shifts[i].to(o_proj.weight.device)
        state[prefix + "o_proj.bias"] = bias.to(o_proj.weight.dtype)
        for proj in ("q_proj", "k_proj", "v_proj"):
            module = getattr(spec.attention(model, i), proj)
            if module.bias is None:
                state[prefix + f"{proj}.bias"] = torch.zeros(module.out_features, dtype=module.weight.dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.dtype = model.dtype
    config.save_pretrained(out_dir)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out_dir)
    save_file({k: v.cpu() for k, v in state.items()}, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    used = steering.alpha if alpha is None else alpha
    save_steering(steering.with_alpha(used), out_dir / "steering")
    info = {
        "baked_with": "memalign",
        "as": "LlamaForCausalLM",
        "from": spec.model_type,
        "alpha": used,
        "steered_layers": sorted(shifts),
    }
    (out_dir / BAKE_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out_dir
