"""Exceptions that carry a message meant for the user: what went wrong and what to do about it.

The CLI prints these as one line (no traceback); library users can catch :class:`MemalignError`.
"""

from __future__ import annotations


class MemalignError(Exception):
    """Base class of every error memalign raises on purpose."""


class ModelNotFoundError(MemalignError, FileNotFoundError):
    """A model name, path or preset could not be resolved."""


class UnsupportedArchitectureError(MemalignError, ValueError):
    """The model's architecture has no adapter (``ArchSpec``)."""


class PresetError(MemalignError, RuntimeError):
    """A packaged preset could not be installed, verified or converted."""


class ConfigError(MemalignError, ValueError):
    """A configuration value (or combination of values) is impossible."""


class DataError(MemalignError, ValueError):
    """An input data file is malformed; the message names the first bad row."""


class UnknownNameError(ConfigError, KeyError):
    """A name (architecture, preset, task, method, mode, ...) that no registry knows; lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(MemalignError, ValueError):
    """Two entries registered under one name or alias (a programming error, raised at import time)."""
