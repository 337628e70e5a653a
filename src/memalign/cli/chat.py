"""``memalign chat``: talk to a model, streaming the answer."""

from __future__ import annotations

import typer

from memalign.cli import app
from memalign.models.loading import load_model
from memalign.models.presets import DEFAULT_PRESET
from memalign.progress import console


@app.command()
def chat(
    model: str = typer.Option(DEFAULT_PRESET, "--model", "-m", help="preset, .gguf, local dir or hub id"),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="ask one question and exit"),
    system: str | None = typer.Option(None, "--system", help="system prompt"),
    max_new_tokens: int = typer.Option(256, help="length limit of each answer"),
    dtype: str = typer.Option("auto", help="auto (bf16 where native, else fp32), bf16, fp32 or fp16"),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda"),
) -> None:
    """Chat with a model (one turn with --prompt, else interactive until an empty line)."""
    from memalign.generation import ChatSession

    model_obj, tokenizer = load_model(model, dtype=dtype, device=device)
    session = ChatSession(model_obj, tokenizer, system=system, max_new_tokens=max_new_tokens)
    if prompt is not None:
        session.ask(prompt, stream=True)
        return
    console.print("[dim]empty line to quit[/]")
    while True:
        try:
            question = console.input("[bold]you> [/]")
        except EOFError:
            break
        if not question.strip():
            break
        session.ask(question, stream=True)
