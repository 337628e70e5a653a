"""``memalign persona ...``: personality alignment (PAS) commands."""

from __future__ import annotations

import typer

from memalign.cli import app

persona_app = typer.Typer(help="Personality alignment (PAS): quiz, align, evaluate.", no_args_is_help=True)
app.add_typer(persona_app, name="persona")
