"""One table model for every report: built once from results, rendered to each output format.

A report's table is data (title, columns, rows of strings, notes), so the terminal view and the Markdown
file cannot drift apart: the Markdown comes from :meth:`Table.to_markdown`, the terminal view from
``memalign.cli.tables.rich_table`` (rich stays in the CLI).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """A column's header and how it is laid out: ``numeric`` columns are right-aligned in every format;
    ``wrap=False`` keeps a label column on one line in the terminal."""

    name: str
    numeric: bool = False
    wrap: bool = True


@dataclass(frozen=True)
class Table:
    """A titled grid of formatted cells.

    ``title`` and ``subtitle`` name what the table shows (``passkey``, ``qwen2.5-0.5b``); ``notes`` say how to
    read its cells (``score x100, samples in parentheses``). Cells are already formatted strings: the
    numbers' precision is the report's decision, not the renderer's.
    """

    title: str
    columns: Sequence[Column]
    rows: Sequence[Sequence[str]] = ()
    notes: str = ""
    subtitle: str = ""

    def __post_init__(self) -> None:
        # stored as tuples: a built table is a value (compares, hashes, cannot change under a renderer)
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "rows", tuple(tuple(row) for row in self.rows))
        for n, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.title!r}: row {n} has {len(row)} cells for {len(self.columns)} columns")

    @property
    def caption(self) -> str:
        """The plain-text title line: ``title - subtitle (notes)``."""
        text = f"{self.title} - {self.subtitle}" if self.subtitle else self.title
        return f"{text} ({self.notes})" if self.notes else text

    def to_markdown(self, heading: bool = True) -> str:
        """A GitHub Markdown table (no trailing newline), under a ``**title**, subtitle (notes)`` line."""
        lines = []
        if heading:
            head = f"**{self.title}**" + (f", {self.subtitle}" if self.subtitle else "")
            lines += [head + (f" ({self.notes})" if self.notes else ""), ""]
        lines.append("| " + " | ".join(c.name for c in self.columns) + " |")
        lines.append("|" + "".join("---:|" if c.numeric else "---|" for c in self.columns))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def markdown_document(tables: Sequence[Table]) -> str:
    """Several tables as one Markdown text, a blank line between them ("" for none)."""
    return "\n\n".join(table.to_markdown() for table in tables) + "\n" if tables else ""


__all__ = ["Column", "Table", "markdown_document"]
