"""Fold a steering into ``o_proj`` biases and save a plain Hugging Face checkpoint that keeps it.

Adding ``s`` to the o_proj input at every position equals adding ``W_o @ s`` to its output, i.e. a bias.
The catch (PAlign's fork and ITI's bake both hit it): these models' ``o_proj`` has no bias, so a bias
saved into the weights is dropped or rejected on reload unless the *config* declares one. Which config
field creates an o_proj bias is found by building the architecture on the meta device with each
candidate field switched on (transformers' own modeling code is the authority); biases that field
also creates elsewhere (q/k/v for Llama/Qwen3/Gemma3) are saved as zeros, so the checkpoint reloads with
exactly the steered behaviour. Architectures whose o_proj bias is hard-wired off (Qwen2, Mistral, Phi-3
in transformers 5.23) are refused: use the runtime hook there.
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
        "steering. Apply it at runtime instead "
        "(memalign.persona.load_steering(...).apply(model), or `memalign chat --persona DIR`)"
    )


def bake(model: PreTrainedModel, steering: Steering, out_dir: str | Path,
         tokenizer: PreTrainedTokenizerBase | None = None, alpha: float | None = None) -> Path:
    """Save ``model`` with ``steering`` (at ``alpha``, default its own) folded into o_proj biases.

    Only the ``all`` positions policy can be baked (a bias acts at every position). The model is left
    unchanged: biases and config are swapped in for ``save_pretrained`` and restored afterwards.
    """
    if steering.positions != "all":
        raise ConfigError(f"a bias acts at every position, but this steering uses positions={steering.positions!r}; "
                          "refit or re-save it with positions='all' to bake, or apply it as a hook")
    if getattr(model.config, "quantization_config", None) is not None:
        raise ConfigError("cannot bake into a quantized/GGUF-loaded model; load a plain checkpoint (presets are)")
    spec = steering.check_model(model)
    field, added = o_proj_bias_field(model)
    odd = sorted(n for n in added if not n.endswith(".bias") or not isinstance(
        model.get_submodule(n.rsplit(".", 1)[0]), nn.Linear))
    if odd:
        raise UnsupportedArchitectureError(f"setting {field} also adds {odd[0]}, which bake does not know how to fill")
    out_dir = Path(out_dir)
    shifts = steering.layer_shifts(alpha)
    new_config = copy.deepcopy(model.config)
    setattr(text_config(new_config), field, True)
    originals: dict[str, nn.Parameter | None] = {}
    o_proj_names = {f"{spec.family.layers_path}.{i}.{spec.family.attention_attr}.{spec.family.o_proj_attr}"
                    for i in range(spec.num_layers)}
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
    info = {"baked_with": "memalign", "config_field": field, "alpha": steering.alpha if alpha is None else alpha,
            "steered_layers": sorted(shifts)}
    (out_dir / BAKE_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out_dir


def _layer_of(name: str, o_proj_names: set[str], layers_path: str) -> int | None:
    if name not in o_proj_names:
        return None
    return int(name.removeprefix(layers_path + ".").split(".", 1)[0])
