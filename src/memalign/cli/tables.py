"""Report tables on the terminal: the one place a :class:`memalign.reporting.Table` becomes a rich table."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from memalign.cli.display import console as default_console
from memalign.reporting import Table

# A pipe or a log file has no width of its own; rich would then squeeze a wide table into 80 columns
# of ellipses. Reports are read later in full, so they get this width instead.
PIPE_WIDTH = 200


def rich_table(table: Table) -> RichTable:
    """``table`` as a rich table. Every cell and the title are escaped: report cells hold ``[...]``
    notes (``[1 failed]``, ``MODE[label]``) that rich would otherwise read as markup and drop."""
    out = RichTable(title=escape(table.caption))
    for column in table.columns:
        out.add_column(escape(column.name), justify="right" if column.numeric else "left", no_wrap=not column.wrap)
    for row in table.rows:
        out.add_row(*(escape(cell) for cell in row))
    return out


def print_tables(tables: Iterable[Table], console: Console | None = None) -> None:
    """Print each table on ``console`` (default: the CLI's console, or a wide one when it is not a terminal)."""
    if console is None:
        console = default_console if default_console.is_terminal else Console(width=PIPE_WIDTH, stderr=True)
    for table in tables:
        console.print(rich_table(table))
