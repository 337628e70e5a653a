"""Progress display shared by the library and the CLI (rich), quiet when not on a terminal or in CI."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def _enabled() -> bool:
    return os.environ.get("MEMALIGN_PROGRESS", "1") != "0"


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner with a message (or one log line when output is not a terminal)."""
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
def progress_bar(description: str, total: float | None, unit: str = "it",
                 extra: Callable[[], str] | None = None) -> Iterator[Callable[[float], None]]:
    """Yield ``advance(n)``; shows a rich bar on a terminal, a start line otherwise."""
    if not _enabled() or not console.is_terminal:
        if _enabled() and not console.is_terminal and total and total > (1 << 26 if unit == "B" else 0):
            console.print(f"[memalign] {description}", highlight=False)
        yield lambda n: None
        return
    columns = [TextColumn("{task.description}"), BarColumn()]
    columns += [DownloadColumn()] if unit == "B" else [MofNCompleteColumn()]
    columns += [TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[extra]}")]
    with Progress(*columns, console=console, transient=unit == "B") as progress:
        task = progress.add_task(description, total=total, extra="")

        def advance(n: float) -> None:
            progress.update(task, advance=n, extra=extra() if extra else "")

        yield advance

