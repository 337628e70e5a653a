"""Many steerings on one model at once, a different one for each row of a batch, in one forward pass.

A server batches requests of different users; each may ask for another persona. Attaching one
:class:`~memalign.persona.steering.Steering` at a time would split the batch per persona. Instead each
steered layer gets one ``o_proj`` forward pre-hook that adds ``table[rows]``: ``table`` is a
``[n_personas + 1, heads * head_dim]`` matrix of that layer's shifts (row 0 is zero: no persona) and
``rows`` is the per-row persona index of the running batch, set with :meth:`RowSteering.select` before
each forward. A row's result equals the same row run alone under ``steering.apply(model)`` (a test checks
it), including each steering's own positions policy (``all`` or ``generated``) and strength.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from memalign.errors import ConfigError, UnknownNameError
from memalign.persona.steering import Steering, SteeringHandle

__all__ = ["RowSteering"]


class RowSteering:
    """Named steerings of one model, applied per batch row.

    ``with rows.apply(model): rows.select(["ann", None, "bob"]); model(...)`` steers row 0 as ``ann``,
    leaves row 1 alone and steers row 2 as ``bob``. Each steering keeps its own ``alpha`` and positions.
    """

    def __init__(self, steerings: Mapping[str, Steering]) -> None:
        self.names: tuple[str, ...] = tuple(steerings)
        self._index = {name: i + 1 for i, name in enumerate(self.names)}
        self._steerings = dict(steerings)
        self._rows = torch.zeros(0, dtype=torch.long)
        self._tables: dict[int, torch.Tensor] = {}
        width: int | None = None
        for name, steering in steerings.items():
            for layer, shift in steering.layer_shifts().items():
                if width is None:
                    width = shift.shape[0]
                table = self._tables.setdefault(layer, torch.zeros(len(self.names) + 1, shift.shape[0]))
                if shift.shape[0] != table.shape[1]:
                    raise ConfigError(f"steering {name!r} has another width than the others; all must fit one model")
                table[self._index[name]] = shift
        # generated-only personas shift just the last position of a multi-token forward
        self._generated_only = torch.tensor([False] + [s.positions == "generated" for s in steerings.values()])

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str | None) -> int:
        """The table row of a persona name (0 for None)."""
        if name is None:
            return 0
        try:
            return self._index[name]
        except KeyError:
            known = ", ".join(self.names) or "none"
            raise UnknownNameError(f"unknown persona {name!r}; known: {known}") from None

    def select(self, names: Sequence[str | None]) -> None:
        """Set the persona of each row of the next forward(s): one name (or None) per batch row."""
        self._rows = torch.tensor([self.index(name) for name in names], dtype=torch.long)

    def apply(self, model: nn.Module) -> SteeringHandle:
        """Attach the per-row hooks (after checking every steering fits ``model``); remove with the handle."""
        spec = None
        for steering in self._steerings.values():
            spec = steering.check_model(model)
        handle = SteeringHandle()
        if spec is None:
            return handle
        for layer, table in self._tables.items():
            handle._handles.append(spec.o_proj(model, layer).register_forward_pre_hook(self._hook(table)))
        return handle

    def _hook(self, table: torch.Tensor):
        converted: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

        def hook(module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            rows = self._rows
            if rows.shape[0] != x.shape[0]:
                raise ConfigError(
                    f"RowSteering.select got {rows.shape[0]} row(s) for a batch of {x.shape[0]}; "
                    "select one persona per row before each forward"
                )
            key = (x.dtype, x.device)
            if key not in converted:
                converted[key] = table.to(device=x.device, dtype=x.dtype)
            delta = converted[key][rows.to(x.device)][:, None, :]  # [B, 1, q]
            if x.shape[-2] == 1:
                return (x + delta, *args[1:])
            # [B, L, 1]: 1 where the row's policy steers the position (all, or only the last one)
            weight = torch.ones(x.shape[0], x.shape[-2], 1, dtype=x.dtype, device=x.device)
            generated_only = self._generated_only[rows].to(x.device)
            weight[generated_only, :-1] = 0
            return (x + delta * weight, *args[1:])

        return hook
