"""``memalign models`` and ``memalign info``."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from memalign.cli import app
from memalign.cli.display import console
from memalign.models.cache_dir import cache_root
from memalign.models.presets import PRESETS, is_cached


@app.command()
def models() -> None:
    """List the packaged presets: real models installed from PyPI on first use (see docs/presets.md)."""
    table = Table(title="memalign presets")
    table.add_column("preset", no_wrap=True)
    for col in ("architecture", "size", "cached", "license", "upstream"):
        table.add_column(col)
    table.add_column("description", overflow="fold", ratio=1)
    for name, preset in PRESETS.items():
        cached = is_cached(name)
        table.add_row(
            name,
            preset.model_type,
            f"{preset.size_mb} MB",
            "yes" if cached else "no",
            preset.license,
            preset.upstream,
            preset.description,
        )
    console.print(table)
    console.print(f"cache: {cache_root() / 'presets'} (set MEMALIGN_CACHE)")


@app.command()
def info(
    model: str = typer.Argument(..., help="preset, .gguf file, local directory, hub id, or tiny:<kind>"),
    as_json: bool = typer.Option(False, "--json", help="print machine-readable JSON"),
) -> None:
    """Show the architecture facts memalign relies on (read from the config, no weights loaded)."""
    from memalign.models.info import describe_model  # imports transformers: only when asked

    data = describe_model(model)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"{model}", show_header=False)
    for key, value in data.items():
        table.add_row(key, f"{value:,}" if key == "parameters" else str(value))
    console.print(table)
