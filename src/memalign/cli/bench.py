"""``memalign bench ...``: long-context benchmark runner and reports."""

from __future__ import annotations

import typer

from memalign.cli import app

bench_app = typer.Typer(help="Long-context benchmarks: run tasks x lengths x methods, report.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
