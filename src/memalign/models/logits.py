"""Final-logit soft-capping (Gemma 2/3's ``final_logit_softcapping``), applied the way the model does."""

from __future__ import annotations

from typing import Any

import torch


def final_logit_softcap(config: Any) -> float | None:
    """The model's final-logit cap, or None when it has none (read from the text config of wrappers)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(text_config, "final_logit_softcapping", None)
    return float(cap) if cap else None


def soft_cap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """``tanh(logits / cap) * cap`` -- what the model's own head does after ``lm_head`` -- or ``logits``."""
    return torch.tanh(logits / cap) * cap if cap else logits
