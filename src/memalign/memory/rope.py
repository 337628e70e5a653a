"""RoPE for memory attention: the model's own rotary module, at small relative positions only.

While memory is attached, the model's rotary module is made to return the identity (cos=1, sin=0),
so keys reach the cache unrotated (after q/k norms where the model has them). The memory attention
then rotates q and k itself with cos/sin tables taken from the *same* rotary module (every rope type:
default, llama3, yarn, longrope, attention scaling, per-layer-type rope in Gemma3) at positions that
never exceed ``n_local + chunk`` — no large absolute angles, no hand-written theta.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def identity_rotary_hook(
    module: nn.Module, args: Any, output: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = output
    return torch.ones_like(cos), torch.zeros_like(sin)


def bypass_rotary(rotary: nn.Module) -> RemovableHandle:
    """Make ``rotary`` yield the identity rotation until the returned handle is removed."""
    return rotary.register_forward_hook(identity_rotary_hook)


class RopeTable:
    """cos/sin of one layer's rope for positions ``[0, size)``, grown on demand, computed by the model's module.

    ``rotary_fn(x, position_ids)`` must be the module's *forward* (hooks bypassed): see ``ArchSpec.rotary_fn``.
    """

    def __init__(
        self,
        rotary_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        dtype: torch.dtype,
        device: torch.device,
        size: int = 1024,
    ) -> None:
        self._fn, self.dtype, self.device = rotary_fn, dtype, device
        self.cos = self.sin = torch.empty(0)
        self._build(size)

    def _build(self, size: int) -> None:
        positions = torch.arange(size, device=self.device)[None]
        dummy = torch.zeros(1, 1, 1, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            cos, sin = self._fn(dummy, positions)
        self.cos, self.sin = cos[0].to(self.dtype), sin[0].to(self.dtype)
        # Position 0 is the identity for rope types without attention scaling: memory keys need no rotation.
        self.identity_at_zero = bool((self.cos[0] == 1).all() and (self.sin[0] == 0).all())

    def at(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [stop - start, r] of positions ``[start, stop)``."""
        if stop > self.cos.shape[0]:
            self._build(max(stop, 2 * self.cos.shape[0]))
        return self.cos[start:stop], self.sin[start:stop]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` on the first ``cos.shape[-1]`` dims (partial rotary keeps the rest).

    Bit-identical to transformers' ``apply_rotary_pos_emb`` (same products, ``a + (-b)`` == ``a - b``), but
    written in place on one output tensor instead of concatenating halves. ``cos``/``sin`` are [L, r].
    """
    r = cos.shape[-1]
    h = r // 2
    out = x.clone()
    rot = out[..., :r]
    rot.mul_(cos)
    rot[..., :h].sub_(x[..., h:r] * sin[..., :h])
    rot[..., h:].add_(x[..., :h] * sin[..., h:])
    return out
