"""Event storage of one layer of one sequence: archived K/V, event spans and representative vectors.

Events are consecutive runs of tokens, so their K/V live in one append-only archive per layer
(token-major, kv heads) with event start offsets; a retrieval gathers the selected spans with one
index_select. Representative vectors (one [heads*head_dim] row per event) live in one growable matrix,
so scoring all events against a query is a single mat-vec followed by one top-k.
"""

from __future__ import annotations

import torch

from memalign.memory.buffers import TokenBuffer


class EventStore:
    def __init__(self, num_kv_heads: int, head_dim: int, repr_dim: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.keys = TokenBuffer(num_kv_heads, (head_dim,), dtype, device)
        self.values = TokenBuffer(num_kv_heads, (head_dim,), dtype, device)
        self.reprs = TokenBuffer(1, (repr_dim,), dtype, device)
        self.starts: list[int] = []  # archive offset of each event
        self.positions: list[int] = []  # absolute position of each event's first token
        self._sizes = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def num_tokens(self) -> int:
        return len(self.keys)

    @property
    def sizes(self) -> torch.Tensor:
        return self._sizes

    def add(self, keys: torch.Tensor, values: torch.Tensor, representative: torch.Tensor, position: int) -> None:
        """Store one event: keys/values [Hkv, n, D] (unrotated), representative [heads*D]."""
        self.starts.append(len(self.keys))
        self.positions.append(position)
        self.keys.append(keys)
        self.values.append(values)
        self.reprs.append(representative.reshape(1, 1, -1))
        self._sizes = torch.cat([self._sizes, torch.tensor([keys.shape[1]])])

    def repr_matrix(self) -> torch.Tensor:
        """[events, heads*D] representative vectors."""
        return self.reprs.view()[0]

    def gather(self, event_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V [Hkv, n, D] of the given events, in the given order."""
        if not event_ids:
            empty = self.keys.view(0, 0)
            return empty, empty
        index = torch.cat([torch.arange(self.starts[i], self.starts[i] + int(self._sizes[i])) for i in event_ids])
        index = index.to(self.keys.view().device)
        return self.keys.view().index_select(1, index), self.values.view().index_select(1, index)

    def nbytes(self) -> int:
        return self.keys.nbytes() + self.values.nbytes() + self.reprs.nbytes()
