"""One registry type for every "name -> entry" table in memalign.

Architectures, presets, boundary strategies, refinement metrics, bench tasks / metrics / methods,
persona modes and predictors are all looked up by a name a user typed. They share one set of rules so
that a typo fails the same way everywhere: an unknown name raises :class:`UnknownNameError` listing the
known names, a second registration under a taken name (or alias) raises :class:`DuplicateNameError`
at import time instead of silently replacing the first entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from memalign.errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")


def _identity(name: str) -> str:
    return name


class Registry(Mapping[str, T], Generic[T]):
    """An ordered mapping of canonical names to entries, with aliases.

    ``normalize`` maps what a user typed to a lookup key (e.g. case- and ``_``/``-``-insensitive); it is
    applied to canonical names and aliases when they are registered and to every lookup. Iteration yields
    canonical names in registration order; aliases resolve but are not listed.
    """

    def __init__(self, kind: str, *, normalize: Callable[[str], str] | None = None, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._normalize = normalize or _identity
        self._entries: dict[str, T] = {}
        self._keys: dict[str, str] = {}  # normalised name or alias -> canonical name

    # -- registration -------------------------------------------------------------------------------
    def add(self, name: str, entry: T, *, aliases: Iterable[str] = ()) -> T:
        """Register ``entry`` under ``name`` (and ``aliases``); a taken name or alias raises."""
        keys = [self._normalize(k) for k in (name, *aliases)]
        for raw, key in zip((name, *aliases), keys, strict=True):
            if key in self._keys and self._keys[key] != name or name in self._entries:
                raise DuplicateNameError(f"{self.kind} {raw!r} is already registered")
        self._entries[name] = entry
        for key in keys:
            self._keys[key] = name
        return entry

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorate(entry: T) -> T:
            return self.add(name, entry, aliases=aliases)

        return decorate

    # -- lookup -------------------------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        """The canonical name for ``name`` or one of its aliases."""
        if not isinstance(name, str):
            raise UnknownNameError(
                f"{self.kind} name must be a string, got {type(name).__name__}; known: {', '.join(self._entries)}"
            )
        try:
            return self._keys[self._normalize(name)]
        except KeyError:
            hint = f" {self.hint}" if self.hint else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self._entries) or '(none)'}{hint}"
            ) from None

    def __getitem__(self, name: str) -> T:
        return self._entries[self.resolve(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._normalize(name) in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
