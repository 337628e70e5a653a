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


# -- reports (bench and persona tables, statistics, plots) ----------------------------------------------


class MissingExtraError(MemalignError, ImportError):
    """An optional dependency (the ``eval`` extra: scipy, matplotlib; the ``ray`` extra) is needed, not installed."""


# -- serving (memalign serve: the OpenAI-compatible server) ----------------------------------------------


class RequestError(MemalignError, ValueError):
    """A request to the server is malformed or asks for what it may not; ``status`` is the HTTP status it
    earns and ``param`` the request field at fault (OpenAI's error object carries both)."""

    status = 400
    code: str | None = "invalid_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class AuthenticationError(RequestError):
    """No API key, or one the server does not know."""

    status, code = 401, "invalid_api_key"


class PermissionDeniedError(RequestError):
    """The API key may not use what the request asks for (a persona)."""

    status, code = 403, "permission_denied"


class NotFoundError(RequestError):
    """A model or conversation that does not exist for this API key."""

    status, code = 404, "not_found"


class ConflictError(RequestError):
    """The request cannot run now or on this state (a conversation busy with another turn, a diverging history)."""

    status, code = 409, "conflict"


# -- episodic memory (event store tiers) ------------------------------------------------------------------


class OffloadError(MemalignError, OSError):
    """Event K/V could not be moved to (or kept within) a storage tier: disk full, directory unwritable,
    or a budget too small for one event. The store is left consistent: every event stored before the
    error is still served, and the event whose storage failed is not counted."""


class StoreClosedError(MemalignError, RuntimeError):
    """An event store was used after ``close()`` (its files and buffers are gone)."""


# ---- model loading --------------------------------------------------------------------------------


class ModelFileError(ModelNotFoundError):
    """A model file exists but cannot be used: empty, truncated, or not the format its name says."""


class ServerStartError(MemalignError, RuntimeError):
    """A server subprocess (``memalign.serving.process``) exited, or did not answer ``/health``, while starting."""


# -- scale-out (--ray: bench runs and persona evaluations on a Ray cluster) --------------------------------


class WorkerError(MemalignError, RuntimeError):
    """A Ray worker could not do its part: it could not load the model, raised on an item, or died on the
    same item too often. The message carries the worker's own error and where it ran."""
