"""The memalign cache directory: where memalign keeps what it builds once and reuses.

It holds the safetensors copies of converted presets (``presets/<name>/hf``) and other derived files
(persona activation banks). Not to be confused with :mod:`memalign.memory.cache`, the KV cache that
episodic memory plugs into transformers' generation.
"""

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
