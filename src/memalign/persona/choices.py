"""The one check for a setting that takes one of a few fixed words (positions, prediction, answering, read)."""

from __future__ import annotations

from collections.abc import Sequence

from memalign.errors import ConfigError


def check_choice(setting: str, value: str, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``; otherwise a :class:`ConfigError` naming the setting and the choices."""
    if value not in allowed:
        raise ConfigError(f"{setting} must be one of {', '.join(allowed)}, got {value!r}")
    return value
