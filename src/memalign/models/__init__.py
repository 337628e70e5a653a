"""Model loading (presets, GGUF, local, hub) and per-architecture adapters."""

from memalign.models.arch import (
    ARCH_REGISTRY,
    ArchFamily,
    ArchSpec,
    get_arch_spec,
    register_arch,
    supported_model_types,
)
from memalign.models.loading import load_model
from memalign.models.placement import resolve_device, resolve_dtype
from memalign.models.presets import (
    DEFAULT_PRESET,
    PRESETS,
    Preset,
    ensure_preset,
    get_preset,
    is_cached,
    register_preset,
)

__all__ = [
    "ARCH_REGISTRY",
    "DEFAULT_PRESET",
    "PRESETS",
    "ArchFamily",
    "ArchSpec",
    "Preset",
    "ensure_preset",
    "get_arch_spec",
    "get_preset",
    "is_cached",
    "load_model",
    "register_arch",
    "register_preset",
    "resolve_device",
    "resolve_dtype",
    "supported_model_types",
]
