"""Progress reporting for long library operations, without any display code.

Library modules call :func:`status` (a phase with a message) and :func:`progress_bar` (a counted loop).
What the user sees is decided by the installed :class:`ProgressReporter`: by default phases are logged on
the ``memalign`` logger and counted loops are silent; the CLI installs a rich reporter
(``memalign.cli.display``). A server or notebook can install its own with :func:`set_reporter`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

logger = logging.getLogger(__name__)

Advance = Callable[[float], None]


class ProgressReporter(Protocol):
    def status(self, message: str) -> AbstractContextManager[None]: ...

    def progress_bar(
        self, description: str, total: float | None, unit: str = "it", extra: Callable[[], str] | None = None
    ) -> AbstractContextManager[Advance]: ...


class LoggingReporter:
    """The library default: one INFO log line per phase or loop, nothing per step."""

    @contextmanager
    def status(self, message: str) -> Iterator[None]:
        logger.info(message)
        yield

    @contextmanager
    def progress_bar(
        self, description: str, total: float | None, unit: str = "it", extra: Callable[[], str] | None = None
    ) -> Iterator[Advance]:
        logger.info("%s (%s %s)", description, "?" if total is None else f"{total:g}", unit)
        yield lambda n: None


_reporter: ProgressReporter = LoggingReporter()


def set_reporter(reporter: ProgressReporter) -> ProgressReporter:
    """Install ``reporter`` for every later call; returns the previous one (to restore it)."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def status(message: str) -> AbstractContextManager[None]:
    """A phase of work with a message (a spinner in the CLI)."""
    return _reporter.status(message)


def progress_bar(
    description: str, total: float | None, unit: str = "it", extra: Callable[[], str] | None = None
) -> AbstractContextManager[Advance]:
    """Yield ``advance(n)`` for a counted loop (a bar in the CLI); ``unit="B"`` counts bytes."""
    return _reporter.progress_bar(description, total, unit, extra)
