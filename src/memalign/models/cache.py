"""Where memalign keeps what it builds once (converted presets, activation caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$MEMALIGN_CACHE``, else ``$XDG_CACHE_HOME/memalign``, else ``~/.cache/memalign``."""
    explicit = os.environ.get("MEMALIGN_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "memalign"
