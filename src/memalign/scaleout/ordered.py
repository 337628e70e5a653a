"""Results that finish in any order, released in the order they were asked for.

Workers finish items out of order; the records a run writes must not depend on that, so a Ray run and a
local run produce the same files. :class:`InOrder` holds early results until every earlier one is in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class InOrder(Generic[T]):
    """Buffers ``(index, value)`` pairs and releases values by increasing index, each index exactly once."""

    def __init__(self, start: int = 0) -> None:
        self._next = start
        self._held: dict[int, T] = {}

    def add(self, index: int, value: T) -> list[T]:
        """Hold ``value``; return every value now due (possibly none). A repeated or past index is a bug."""
        if index < self._next or index in self._held:
            raise ValueError(f"result {index} delivered twice")
        self._held[index] = value
        released = []
        while self._next in self._held:
            released.append(self._held.pop(self._next))
            self._next += 1
        return released

    @property
    def waiting(self) -> int:
        """Results held back because an earlier one is still missing."""
        return len(self._held)


def in_order(results: Iterable[tuple[int, T]], start: int = 0) -> Iterator[T]:
    """The values of ``results`` (``(index, value)`` in any order) by increasing index, each as soon as due."""
    buffer: InOrder[T] = InOrder(start)
    for index, value in results:
        yield from buffer.add(index, value)
    if buffer.waiting:
        raise ValueError(f"{buffer.waiting} results arrived without every earlier one")
