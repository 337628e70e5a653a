"""The ``memalign`` command. Subcommand groups live in sibling modules and register on ``app``."""

from __future__ import annotations

import sys

import typer

from memalign.errors import MemalignError
from memalign.progress import console

app = typer.Typer(
    name="memalign",
    help="Episodic memory (EM-LLM) and personality alignment (PAS) for Hugging Face decoder LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Importing the command modules registers their commands on ``app``.
from memalign.cli import bench, chat, models_cmd, persona, persona_eval  # noqa: E402, F401


def main() -> None:
    """Entry point: user errors become one red line and exit code 2, never a traceback."""
    try:
        app(prog_name="memalign")  # same name under `python -m memalign`
    except MemalignError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
