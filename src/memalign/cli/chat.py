"""``memalign chat``: talk to a model, streaming the answer; optionally with episodic memory and a persona."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from memalign.cli import app
from memalign.cli.display import console
from memalign.errors import MemalignError
from memalign.models.loading import load_model
from memalign.models.presets import DEFAULT_PRESET
from memalign.progress import progress_bar

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from memalign.generation import MemoryChatSession


@app.command()
def chat(
    model: str = typer.Option(DEFAULT_PRESET, "--model", "-m", help="preset, .gguf, local dir or hub id"),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="ask one question and exit"),
    system: str | None = typer.Option(None, "--system", help="system prompt"),
    memory: str | None = typer.Option(
        None, "--memory", help="episodic memory preset (small, qwen3, llama3, ...) or an EM config YAML"
    ),
    context: Path | None = typer.Option(
        None, "--context", help="a long text file to read into memory first", exists=True, dir_okay=False
    ),
    persona: Path | None = typer.Option(None, "--persona", help="a steering directory from `persona align`"),
    max_new_tokens: int = typer.Option(256, help="length limit of each answer"),
    dtype: str = typer.Option("auto", help="auto (bf16 where native, else fp32), bf16, fp32 or fp16"),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:N, mps or xpu"),
) -> None:
    """Chat with a model (one turn with --prompt, else interactive until an empty line)."""
    if context is not None and memory is None:
        memory = "small"  # reading a document needs memory; the small preset suits CPU models
    # Loading first: it checks --model, --device and --dtype before the generation stack is imported.
    model_obj, tokenizer = load_model(model, dtype=dtype, device=device)
    from memalign.generation import ChatSession, MemoryChatSession

    with contextlib.ExitStack() as stack:
        if persona is not None:
            stack.enter_context(_persona(persona, model_obj))
        if memory is not None:
            from memalign.memory import EpisodicMemory

            mem = stack.enter_context(EpisodicMemory(model_obj, memory))
            session = MemoryChatSession(mem, tokenizer, system=system, max_new_tokens=max_new_tokens)
            if context is not None:
                _read_document(session, context)
        else:
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


def _persona(path: Path, model: PreTrainedModel) -> contextlib.AbstractContextManager:
    try:
        from memalign.persona import load_steering
    except ImportError as exc:
        raise MemalignError(f"personality steering is not available in this build ({exc})") from None
    return load_steering(path, model).apply(model)


def _read_document(session: MemoryChatSession, path: Path) -> None:
    import time

    text = path.read_text(errors="replace")
    n_tokens = len(session.tokenizer(text)["input_ids"])
    start = time.perf_counter()
    done = [0]

    def extra() -> str:
        rate = done[0] / max(time.perf_counter() - start, 1e-9)
        events = (
            sum(len(layer.store) for layer in session.cache.sequences[0].layers if layer.store)
            if session.cache.sequences
            else 0
        )
        return f"{rate:,.0f} tok/s, {events // max(len(session.memory.spec.layer_types), 1)} events/layer"

    with progress_bar(f"Reading {path.name}", total=n_tokens, extra=extra) as advance:

        def step(n: int) -> None:
            done[0] += n
            advance(n)

        session.read(text, progress=step)
    console.print(f"[dim]read {done[0]:,} tokens in {time.perf_counter() - start:.1f} s[/]")
