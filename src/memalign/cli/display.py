"""Everything the CLI shows: the rich console, the progress reporter and the log handler.

The library never imports rich; :func:`install` routes its progress calls and its ``memalign`` log records
here. Progress is quiet when ``MEMALIGN_PROGRESS=0`` (CI, tests) and reduced to one line per phase when
stderr is not a terminal.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from memalign import progress

console = Console(stderr=True)


def _enabled() -> bool:
    return os.environ.get("MEMALIGN_PROGRESS", "1") != "0"


class RichReporter:
    """Spinners and bars on a terminal, one ``[memalign]`` line per phase otherwise."""

    @contextmanager
    def status(self, message: str) -> Iterator[None]:
        if not _enabled():
            yield
            return
        if not console.is_terminal:
            console.print(f"[memalign] {message}", highlight=False)
            yield
            return
        with console.status(message):
            yield

    @contextmanager
    def progress_bar(
        self, description: str, total: float | None, unit: str = "it", extra: Callable[[], str] | None = None
    ) -> Iterator[progress.Advance]:
        if not _enabled() or not console.is_terminal:
            if _enabled() and total and total > (1 << 26 if unit == "B" else 0):
                console.print(f"[memalign] {description}", highlight=False)
            yield lambda n: None
            return
        columns = [TextColumn("{task.description}"), BarColumn()]
        columns += [DownloadColumn()] if unit == "B" else [MofNCompleteColumn()]
        columns += [TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[extra]}")]
        with Progress(*columns, console=console, transient=unit == "B") as bar:
            task = bar.add_task(description, total=total, extra="")

            def advance(n: float) -> None:
                bar.update(task, advance=n, extra=extra() if extra else "")

            yield advance


class _PlainHandler(logging.Handler):
    """Library log lines as ``[memalign] message`` (warnings in yellow) on the CLI console."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else ""
        text = f"[memalign] {record.getMessage()}"
        console.print(f"[{style}]{text}[/]" if style else text, highlight=False, markup=bool(style), soft_wrap=True)


def install(verbose: bool = False) -> None:
    """Route library progress and ``memalign`` log records to the console (once per process)."""
    progress.set_reporter(RichReporter())
    root = logging.getLogger("memalign")
    if not any(isinstance(h, _PlainHandler | RichHandler) for h in root.handlers):
        root.addHandler(_PlainHandler())
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def error(message: str) -> None:
    """One red line: how the CLI reports a user error."""
    console.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)
