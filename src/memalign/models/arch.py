"""Architecture adapters: where things live inside each supported decoder, as data.

Both capabilities touch attention: EM-LLM replaces the attention function and bypasses the rotary
module; PAS hooks the input of ``o_proj``. Rather than an ``isinstance`` ladder over model classes,
each supported ``config.model_type`` maps to one small declarative :class:`ArchFamily` (module paths
and structural flags), and :func:`get_arch_spec` resolves it against a concrete config/model into an
:class:`ArchSpec` (numbers read from the config and the modules, never derived from hidden size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from memalign.errors import UnsupportedArchitectureError
from memalign.registry import Registry

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"


@dataclass(frozen=True)
class ArchFamily:
    """How one ``model_type`` is laid out (dotted attribute paths from the ``*ForCausalLM`` root)."""

    model_type: str
    decoder_path: str = "model"
    layers_path: str = "model.layers"
    rotary_path: str = "model.rotary_emb"
    attention_attr: str = "self_attn"
    o_proj_attr: str = "o_proj"
    fused_qkv: bool = False
    has_qk_norm: bool = False
    # Gemma3's rotary module takes the layer type (separate local/global rope parameters).
    rotary_takes_layer_type: bool = False
    # Multimodal wrappers (gemma3) keep the decoder settings in a text sub-config.
    uses_text_config: bool = False


ARCH_REGISTRY: Registry[ArchFamily] = Registry(
    "architecture", hint="(add one with memalign.models.register_arch(ArchFamily(...)))"
)


def register_arch(family: ArchFamily) -> ArchFamily:
    """Add an architecture adapter under its Hugging Face ``config.model_type``.

    A second adapter for a registered ``model_type`` raises :class:`~memalign.errors.DuplicateNameError`
    instead of silently replacing the first (two adapters would disagree about where modules live).
    """
    return ARCH_REGISTRY.add(family.model_type, family)


for _family in (
    ArchFamily("qwen3", has_qk_norm=True),
    ArchFamily("qwen3_moe", has_qk_norm=True),
    ArchFamily("qwen2"),
    ArchFamily("llama"),
    ArchFamily("mistral"),
    ArchFamily("phi3", fused_qkv=True),
    ArchFamily("gemma3_text", has_qk_norm=True, rotary_takes_layer_type=True),
    ArchFamily(
        "gemma3",
        decoder_path="model.language_model",
        layers_path="model.language_model.layers",
        rotary_path="model.language_model.rotary_emb",
        has_qk_norm=True,
        rotary_takes_layer_type=True,
        uses_text_config=True,
    ),
):
    register_arch(_family)


def supported_model_types() -> list[str]:
    """Every ``config.model_type`` with an adapter, sorted (for error messages and ``memalign info``)."""
    return sorted(ARCH_REGISTRY)


def _resolve(root: Any, dotted: str) -> Any:
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class ArchSpec:
    """The shape facts of one model that memalign's hooks rely on."""

    family: ArchFamily = field(repr=False)
    model_type: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    layer_types: tuple[str, ...]
    rope_type: str
    rope_theta: float | dict[str, float]
    partial_rotary_factor: float
    sliding_window: int | None
    max_position_embeddings: int | None
    has_qk_norm: bool
    fused_qkv: bool

    # ---- module access -------------------------------------------------------------------------
    def decoder(self, model: nn.Module) -> nn.Module:
        """The base decoder (embeddings + layers + final norm), whose output feeds the LM head."""
        return _resolve(model, self.family.decoder_path)

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return _resolve(model, self.family.layers_path)

    def attention(self, model: nn.Module, layer_idx: int) -> nn.Module:
        return getattr(self.decoder_layers(model)[layer_idx], self.family.attention_attr)

    def attentions(self, model: nn.Module) -> list[nn.Module]:
        return [getattr(layer, self.family.attention_attr) for layer in self.decoder_layers(model)]

    def o_proj(self, model: nn.Module, layer_idx: int) -> nn.Linear:
        return getattr(self.attention(model, layer_idx), self.family.o_proj_attr)

    def o_projs(self, model: nn.Module) -> list[nn.Linear]:
        return [getattr(attn, self.family.o_proj_attr) for attn in self.attentions(model)]

    def rotary(self, model: nn.Module) -> nn.Module:
        return _resolve(model, self.family.rotary_path)

    def rotary_fn(self, model: nn.Module, layer_idx: int) -> Callable[[Any, Any], tuple[Any, Any]]:
        """``(x, position_ids) -> (cos, sin)`` for the rope of layer ``layer_idx``.

        Calls the module's ``forward`` directly, so forward hooks (memory's identity bypass) do not apply.
        """
        rotary = self.rotary(model)
        if self.family.rotary_takes_layer_type:
            layer_type = self.layer_types[layer_idx]
            return lambda x, pos: rotary.forward(x, pos, layer_type)
        return rotary.forward

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def q_size(self) -> int:
        """Width of the ``o_proj`` input: heads x head_dim (not the hidden size, e.g. Qwen3)."""
        return self.num_heads * self.head_dim

    def kv_bytes_per_token(self, dtype_size: int) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_size

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("family")
        data["layer_types"] = list(self.layer_types)
        return data


def text_config(config: Any) -> Any:
    family = family_for(config)
    return config.get_text_config() if family.uses_text_config else config


def family_for(config: Any) -> ArchFamily:
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCH_REGISTRY:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} is not supported by memalign; supported: "
            f"{', '.join(supported_model_types())}. Add an ArchFamily with memalign.models.register_arch "
            "if the model is a standard decoder (q/k/v/o projections, rotary embeddings)."
        )
    return ARCH_REGISTRY[model_type]


def _rope_summary(cfg: Any, layer_types: tuple[str, ...]) -> tuple[str, float | dict[str, float], float]:
    params = getattr(cfg, "rope_parameters", None) or {}
    if params and all(isinstance(v, dict) for v in params.values()):
        # Per layer type (Gemma3): report each type's theta and the rope type of the full layers.
        per_type = {k: float(v.get("rope_theta", 10000.0)) for k, v in params.items()}
        main = params.get(FULL_ATTENTION) or next(iter(params.values()))
        prf = float(main.get("partial_rotary_factor", 1.0))
        return str(main.get("rope_type", "default")), per_type, prf
    rope_type = str(params.get("rope_type", "default"))
    theta = float(params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
    prf = float(params.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0) or 1.0))
    return rope_type, theta, prf


def get_arch_spec(model_or_config: Any) -> ArchSpec:
    """Resolve the :class:`ArchSpec` of a model (preferred: reads ``head_dim`` off the modules) or config.

    Raises :class:`UnsupportedArchitectureError` naming the model type and the supported list.
    """
    model = model_or_config if isinstance(model_or_config, nn.Module) else None
    config = model.config if model is not None else model_or_config
    family = family_for(config)
    cfg = text_config(config)

    num_heads = int(cfg.num_attention_heads)
    num_kv_heads = int(getattr(cfg, "num_key_value_heads", None) or num_heads)
    num_layers = int(cfg.num_hidden_layers)
    head_dim = getattr(cfg, "head_dim", None)
    if model is not None:
        attn = getattr(_resolve(model, family.layers_path)[0], family.attention_attr)
        head_dim = getattr(attn, "head_dim", head_dim)
    if head_dim is None:
        # Only for configs of families whose modeling code itself uses hidden // heads (e.g. Phi-3).
        head_dim = cfg.hidden_size // num_heads
    layer_types = getattr(cfg, "layer_types", None)
    if not layer_types:
        sliding = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        kind = SLIDING_ATTENTION if sliding else FULL_ATTENTION
        layer_types = [kind] * num_layers
    layer_types = tuple(str(t) for t in layer_types)
    rope_type, rope_theta, prf = _rope_summary(cfg, layer_types)
    uses_sliding = SLIDING_ATTENTION in layer_types
    return ArchSpec(
        family=family,
        model_type=str(config.model_type),
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=int(head_dim),
        hidden_size=int(cfg.hidden_size),
        vocab_size=int(cfg.vocab_size),
        layer_types=layer_types,
        rope_type=rope_type,
        rope_theta=rope_theta,
        partial_rotary_factor=prf,
        sliding_window=int(cfg.sliding_window) if uses_sliding and cfg.sliding_window else None,
        max_position_embeddings=getattr(cfg, "max_position_embeddings", None),
        has_qk_norm=family.has_qk_norm,
        fused_qkv=family.fused_qkv,
    )
