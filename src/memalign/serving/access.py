"""API keys of a server: ``{"KEY": ["persona", ...]}`` in a JSON file, ``["*"]`` for every persona."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from memalign.errors import AuthenticationError, ConfigError

__all__ = ["ApiKeys"]


@dataclass(frozen=True)
class ApiKeys:
    """Who may call the server and which personas each key may use."""

    allowed: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_file(cls, path: str | Path) -> ApiKeys:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--api-keys {path}: cannot read a JSON object ({exc})") from None
        if not isinstance(data, dict) or not data:
            raise ConfigError(
                f"--api-keys {path}: expected a non-empty JSON object "
                '{"KEY": ["persona", ...]} (["*"] allows every persona)'
            )
        allowed: dict[str, tuple[str, ...]] = {}
        for key, personas in data.items():
            if not key or not isinstance(personas, list) or not all(isinstance(p, str) for p in personas):
                raise ConfigError(
                    f"--api-keys {path}: the entry of key {key[:4]!r}... must be a list of persona "
                    'names (["*"] for all)'
                )
            allowed[key] = tuple(personas)
        return cls(allowed)

    def authenticate(self, authorization: str | None) -> tuple[str, tuple[str, ...]]:
        """The key of an ``Authorization: Bearer KEY`` header and its personas; refuses a missing or unknown key."""
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationError("missing API key: send `Authorization: Bearer KEY`")
        key = key.strip()
        for known, personas in self.allowed.items():  # constant-time comparison of every key
            if hmac.compare_digest(known.encode(), key.encode()):
                return known, personas
        raise AuthenticationError("unknown API key")
