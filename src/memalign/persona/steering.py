"""A person's steering: per-head shifts added to the input of ``o_proj``, attached by reversible hooks.

Each selected head (layer, head) gets ``alpha * std * direction`` added to its ``head_dim`` slice of the
``o_proj`` input. Hooks are independent handles, so any number of steerings can be attached and detached
in any order; removing a handle restores the model exactly (nothing is written into the weights; for
that see :mod:`memalign.persona.bake`).

Positions policy:

``all``
    every position, including the system prompt and the question (PAlign: the shift lives in a bias).
``generated``
    only positions that produce new tokens: in a forward over several new tokens (a prompt), just its
    last position (which predicts the first answer token); in a one-token forward (each decoding step),
    that token. This assumes left padding, as ``generate`` and memalign's batching use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memalign.errors import ConfigError, MemalignError
from memalign.models.arch import ArchSpec, get_arch_spec
from memalign.persona.capture import check_o_proj_widths
from memalign.persona.choices import check_choice

POSITIONS = ("all", "generated")


def check_positions(positions: str) -> str:
    return check_choice("positions", positions, POSITIONS)


@dataclass(frozen=True)
class Steering:
    """Heads, unit directions and projection stds of one person, with a default strength and policy.

    ``heads[i] = (layer, head)``; ``directions[i]`` is a unit vector of length ``head_dim``; the shift of
    head ``i`` is ``alpha * stds[i] * directions[i]``. ``num_layers``/``num_heads``/``head_dim`` are the
    dims of the model it was fit on, checked whenever it is applied. ``meta`` holds provenance (model id,
    instrument, seed, cross-validation table, ...) and is saved with it.
    """

    heads: tuple[tuple[int, int], ...]
    directions: torch.Tensor
    stds: torch.Tensor
    alpha: float
    num_layers: int
    num_heads: int
    head_dim: int
    positions: str = "all"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_positions(self.positions)
        for name in ("num_layers", "num_heads", "head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        heads = tuple((int(layer), int(head)) for layer, head in self.heads)
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "directions", torch.as_tensor(self.directions, dtype=torch.float32).detach().cpu())
        object.__setattr__(self, "stds", torch.as_tensor(self.stds, dtype=torch.float32).detach().cpu())
        k = len(heads)
        if len(set(heads)) != k:
            raise ConfigError("steering heads must be distinct")
        if self.directions.shape != (k, self.head_dim):
            raise ConfigError(f"directions must be ({k}, {self.head_dim}), got {tuple(self.directions.shape)}")
        if self.stds.shape != (k,):
            raise ConfigError(f"stds must have {k} values, got {tuple(self.stds.shape)}")
        for layer, head in heads:
            if not (0 <= layer < self.num_layers and 0 <= head < self.num_heads):
                raise ConfigError(
                    f"head ({layer}, {head}) is outside the model's {self.num_layers} layers x {self.num_heads} heads"
                )
        if not (torch.isfinite(self.directions).all() and torch.isfinite(self.stds).all()):
            raise ConfigError("steering directions and stds must be finite")
        if not isinstance(self.alpha, (int, float)) or not torch.isfinite(torch.tensor(float(self.alpha))):
            raise ConfigError(f"alpha must be a finite number, got {self.alpha!r}")

    @property
    def k(self) -> int:
        return len(self.heads)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    def with_alpha(self, alpha: float) -> Steering:
        return Steering(
            self.heads,
            self.directions,
            self.stds,
            float(alpha),
            self.num_layers,
            self.num_heads,
            self.head_dim,
            self.positions,
            dict(self.meta),
        )

    def layer_shifts(self, alpha: float | None = None) -> dict[int, torch.Tensor]:
        """Per steered layer, the float32 vector (``num_heads * head_dim``) added to the o_proj input."""
        alpha = self.alpha if alpha is None else float(alpha)
        shifts: dict[int, torch.Tensor] = {}
        for (layer, head), direction, std in zip(self.heads, self.directions, self.stds, strict=True):
            shift = shifts.setdefault(layer, torch.zeros(self.q_size, dtype=torch.float32))
            shift[head * self.head_dim : (head + 1) * self.head_dim] += alpha * std * direction
        return shifts

    def check_model(self, model: nn.Module) -> ArchSpec:
        """The model's spec, after refusing a model whose dims differ from those this steering was fit on."""
        spec = get_arch_spec(model)
        mine = (self.num_layers, self.num_heads, self.head_dim)
        theirs = (spec.num_layers, spec.num_heads, spec.head_dim)
        if mine != theirs:
            raise MemalignError(
                f"this steering was fit on a model with (layers, heads, head_dim) = {mine} but the model has "
                f"{theirs}; fit it again on this model"
            )
        check_o_proj_widths(model, spec)
        return spec

    def apply(self, model: nn.Module, alpha: float | None = None, positions: str | None = None) -> SteeringHandle:
        """Attach now; returns a handle that detaches on ``remove()`` or at the end of a ``with`` block."""
        spec = self.check_model(model)
        policy = check_positions(positions or self.positions)
        handle = SteeringHandle()
        for layer, shift in self.layer_shifts(alpha).items():
            handle._handles.append(spec.o_proj(model, layer).register_forward_pre_hook(_shift_hook(shift, policy)))
        return handle


def _shift_hook(shift: torch.Tensor, positions: str):
    converted: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        key = (x.dtype, x.device)
        if key not in converted:
            converted[key] = shift.to(device=x.device, dtype=x.dtype)
        delta = converted[key]
        if positions == "all" or x.shape[-2] == 1:
            x = x + delta
        else:
            x = torch.cat([x[..., :-1, :], x[..., -1:, :] + delta], dim=-2)
        return (x, *args[1:])

    return hook


@contextmanager
def row_shifts(
    model: nn.Module, shifts: Mapping[int, torch.Tensor], rows: slice, positions: str = "generated"
) -> Iterator[None]:
    """Add a *different* shift to every batch row: ``shifts[layer]`` is (R, heads*head_dim); rows ``rows``.

    Lets one forward evaluate many candidate steerings (folds x K x alpha) side by side, which is how
    cross-validation stays fast; same positions semantics as :meth:`Steering.apply`.
    """
    spec = get_arch_spec(model)
    check_o_proj_widths(model, spec)
    policy = check_positions(positions)
    handle = SteeringHandle()
    try:
        for layer, shift in shifts.items():
            if shift.dim() != 2 or shift.shape[1] != spec.q_size:
                raise ConfigError(f"row shifts of layer {layer} must be (rows, {spec.q_size})")
            per_row = shift[rows][:, None, :]
            handle._handles.append(spec.o_proj(model, layer).register_forward_pre_hook(_shift_hook(per_row, policy)))
        yield
    finally:
        handle.remove()


class SteeringHandle:
    """The hooks of one attached steering; ``remove()`` is idempotent."""

    def __init__(self) -> None:
        self._handles: list[Any] = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> SteeringHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
