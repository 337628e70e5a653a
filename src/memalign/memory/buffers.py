"""Growable token-major buffers with amortised appends and O(1) pops from the front."""

from __future__ import annotations

import math

import torch


class TokenBuffer:
    """A [C, T, D...] tensor that grows along T (geometrically) and releases tokens from the front.

    The window of live tokens is ``data[:, begin:end]``; popping advances ``begin`` and the storage is
    compacted when the dead prefix dominates, so a stream of appends/pops costs amortised O(1) per token.

    ``growth`` is the fraction of capacity added by a reallocation: 0.5 (x1.5) by default. Buffers that
    only grow with the input (representative matrices) take a smaller one: each reallocation then copies
    more often (still amortised O(1): 1/growth copies per token), but the capacity held beyond what is used
    stays within ``growth`` of it, so host memory grows with the tokens stored, not in large steps.

    ``max_live`` (sliding windows) is the most tokens the owner ever holds right after an append. Growth
    stops at 4/3 of it, the capacity where compaction alone always makes room: without it a window whose
    live size creeps up by a few tokens (segmentation leaves a variable remainder) takes another x1.5 step
    late in a long input, which reads as host memory growing with the input when it does not.
    """

    def __init__(
        self,
        channels: int,
        tail_shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        capacity: int = 256,
        growth: float = 0.5,
        max_live: int | None = None,
    ) -> None:
        if not growth > 0:
            raise ValueError(f"TokenBuffer growth must be > 0 (a fraction of capacity added), got {growth}")
        self.growth = growth
        self._steady = None if max_live is None else -(-4 * max_live // 3)
        if self._steady is not None:
            capacity = min(capacity, self._steady)
        self._data = torch.empty(channels, capacity, *tail_shape, dtype=dtype, device=device)
        self.begin = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.begin

    @property
    def dtype(self) -> torch.dtype:
        return self._data.dtype

    @property
    def device(self) -> torch.device:
        return self._data.device

    @property
    def capacity(self) -> int:
        """Tokens the storage holds before the next append reallocates (live + free slots)."""
        return self._data.shape[1] - self.begin

    def view(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        stop = len(self) if stop is None else stop
        return self._data[:, self.begin + start : self.begin + stop]

    def _grows(self, n: int) -> bool:
        """Whether appending ``n`` tokens reallocates into a larger tensor (rather than fitting or compacting)."""
        if self.end + n <= self._data.shape[1]:
            return False
        # Compact in place while live tokens fill at most 3/4 of the storage: a sliding window (append a
        # chunk, pop a chunk) then settles at ~4/3 of its live size instead of 2-4x, and each compaction
        # is followed by at least a quarter of the storage of free appends (amortised O(1) per token).
        return not (self.begin > 0 and 4 * (len(self) + n) <= 3 * self._data.shape[1])

    def _grown(self) -> int:
        """Capacity after a reallocation: ``x(1 + growth)`` (amortised O(1) like doubling, with less slack)."""
        capacity = self._data.shape[1]
        grown = capacity + max(int(capacity * self.growth), 1)
        if self._steady is not None and capacity < self._steady:
            grown = min(grown, self._steady)
        return grown

    def nbytes_after_append(self, n: int) -> int:
        """Bytes allocated after appending ``n`` tokens, so callers can move a buffer before it outgrows a budget."""
        if not self._grows(n):
            return self.nbytes()
        tokens = max(self._grown(), len(self) + n)
        per_token = self._data.element_size() * self._data.shape[0] * math.prod(self._data.shape[2:])
        return per_token * tokens

    def append(self, x: torch.Tensor) -> None:
        n = x.shape[1]
        if self.end + n > self._data.shape[1]:
            live = len(self)
            if not self._grows(n):
                self._data[:, :live] = self._data[:, self.begin : self.end].clone()
            else:
                grown = torch.empty(
                    self._data.shape[0],
                    max(self._grown(), live + n),
                    *self._data.shape[2:],
                    dtype=self._data.dtype,
                    device=self._data.device,
                )
                grown[:, :live] = self._data[:, self.begin : self.end]
                self._data = grown
            self.begin, self.end = 0, live
        self._data[:, self.end : self.end + n] = x
        self.end += n

    def pop_front(self, n: int) -> torch.Tensor:
        """Remove and return (a copy of) the ``n`` oldest tokens."""
        out = self._data[:, self.begin : self.begin + n].clone()
        self.begin += n
        if self.begin == self.end:
            self.begin = self.end = 0
        return out

    def nbytes(self) -> int:
        return self._data.numel() * self._data.element_size()
