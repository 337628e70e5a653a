"""Field checks shared by the memory config dataclasses: one wording for every refused value.

Each check raises :class:`~memalign.errors.ConfigError` naming ``Owner.field``, the value it got and what
is allowed, so a bad YAML key or sweep argument fails at construction, before anything is allocated.
Python's ``bool`` is an ``int`` subclass and ``32.5`` would silently truncate: integer fields accept
neither; float fields accept integers but not ``nan``/``inf``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

from memalign.errors import ConfigError

# Upper bound of every token count and position: 16M tokens, beyond any released model's positions.
# A model-dependent bound (``max_position_embeddings``) is checked when memory is attached to a model;
# this one keeps values such as 10**9 from reaching a buffer or rope-table allocation without a model.
MAX_TOKENS = 1 << 24
MAX_BYTES = 1 << 60  # byte budgets: 1 EiB, "unbounded" for any real machine, still a plain int64
MAX_INDEX = (1 << 31) - 1  # layer indices
MAX_SEED = (1 << 63) - 1  # torch.Generator.manual_seed takes an int64


def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_int(owner: str, name: str, value: Any, low: int, high: int, *, optional: bool = False) -> None:
    """``value`` is an ``int`` (not a bool, not a float) in ``[low, high]`` (or None when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        none = " or None" if optional else ""
        raise ConfigError(f"{owner}.{name} must be an integer in [{low}, {high}]{none}, got {_got(value)}")


def check_float(owner: str, name: str, value: Any, low: float, high: float, *, high_open: bool = False) -> None:
    """``value`` is a finite real number (int or float, not a bool) in ``[low, high]`` (``[low, high)``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value < high if high_open else value <= high)
    if not ok:
        bracket = ")" if high_open else "]"
        raise ConfigError(f"{owner}.{name} must be a finite number in [{low}, {high}{bracket}, got {_got(value)}")


def check_bool(owner: str, name: str, value: Any, *, optional: bool = False) -> None:
    """``value`` is ``True`` or ``False`` (or None when ``optional``): no 0/1, no "yes"."""
    if optional and value is None:
        return
    if not isinstance(value, bool):
        allowed = "True, False or None" if optional else "True or False"
        raise ConfigError(f"{owner}.{name} must be {allowed}, got {_got(value)}")


def check_choice(owner: str, name: str, value: Any, choices: Iterable[str], *, optional: bool = False) -> None:
    """``value`` is one of ``choices`` (or None when ``optional``)."""
    if optional and value is None:
        return
    known = list(choices)
    if not isinstance(value, str) or value not in known:
        none = " or None" if optional else ""
        raise ConfigError(f"{owner}.{name} must be one of {', '.join(known)}{none}, got {_got(value)}")


def check_path(owner: str, name: str, value: Any, *, optional: bool = False) -> None:
    """``value`` is a non-empty ``str`` or ``os.PathLike`` (or None when ``optional``)."""
    if optional and value is None:
        return
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ConfigError(f"{owner}.{name} must be a non-empty path (str or os.PathLike), got {_got(value)}")
