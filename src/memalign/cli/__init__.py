"""The ``memalign`` command. Subcommand groups live in sibling modules and register on ``app``."""

from __future__ import annotations

import sys

import typer

from memalign.cli import display
from memalign.errors import MemalignError

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
    display.install()
    try:
        app(prog_name="memalign")  # same name under `python -m memalign`
    except MemalignError as exc:
        display.error(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
