"""``memalign serve``: an OpenAI-compatible server with per-request personas and per-conversation memory."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import typer

from memalign.cli import app
from memalign.cli.display import console
from memalign.errors import MissingExtraError
from memalign.models.loading import load_model
from memalign.models.presets import DEFAULT_PRESET

logger = logging.getLogger(__name__)

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    model: str = typer.Option(DEFAULT_PRESET, "--model", "-m", help="preset, .gguf, local dir or hub id"),
    memory: str | None = typer.Option(
        None,
        "--memory",
        help="episodic memory preset (small, qwen3, ...) or an EM config YAML; default: EMConfig defaults",
    ),
    personas: Path | None = typer.Option(
        None, "--personas", help="a folder of steering directories (from `persona align`), one persona per folder"
    ),
    state: Path | None = typer.Option(
        None, "--state", help="where conversations' memory is saved after each turn and found again on restart"
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback unless told otherwise)"),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    api_keys: Path | None = typer.Option(
        None,
        "--api-keys",
        help='JSON {"KEY": ["persona", ...]} (["*"] for all); requests then need `Authorization: Bearer KEY`',
        exists=True,
        dir_okay=False,
    ),
    served_name: str | None = typer.Option(None, "--served-name", help="model name clients send (default: --model)"),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="requests decoded together"),
    max_tokens_limit: int = typer.Option(4096, "--max-tokens-limit", min=1, help="largest max_tokens accepted"),
    max_prompt_tokens: int = typer.Option(
        32768, "--max-prompt-tokens", min=1, help="most new prompt tokens one request may feed"
    ),
    ram_budget_mb: int = typer.Option(
        2048, "--ram-budget-mb", min=1, help="memory of live conversations kept in RAM; the rest is paged out"
    ),
    dtype: str = typer.Option("auto", help="auto (bf16 where native, else fp32), bf16, fp32 or fp16"),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda"),
    threads: int = typer.Option(0, "--threads", min=0, help="torch threads (0: torch's default)"),
) -> None:
    """Serve chat completions over HTTP (OpenAI's API, streaming by server-sent events)."""
    try:
        import uvicorn

        from memalign.serving import Engine, EngineLimits, load_personas
        from memalign.serving.access import ApiKeys
        from memalign.serving.app import create_app
    except ImportError as exc:
        raise MissingExtraError(
            f"`memalign serve` needs the serve extra ({exc.name} is missing): pip install 'memalign[serve]'"
        ) from None

    keys = ApiKeys.from_file(api_keys) if api_keys is not None else None
    if host not in _LOOPBACK and keys is None:
        console.print(f"[yellow]serving on {host} without --api-keys: anyone who reaches it can use it[/]")
    if threads:
        # the scheduler thread runs every forward: this bounds the cores one server takes on a shared machine
        torch.set_num_threads(threads)
    model_obj, tokenizer = load_model(model, dtype=dtype, device=device)
    steerings = load_personas(personas, model_obj)
    limits = EngineLimits(max_batch=max_batch, max_new_tokens=max_tokens_limit, max_prompt_tokens=max_prompt_tokens)
    engine = Engine(
        model_obj,
        tokenizer,
        memory=memory,
        personas=steerings,
        state_dir=state,
        model_name=served_name or model,
        limits=limits,
        ram_budget_bytes=ram_budget_mb << 20,
    )
    with engine:
        console.print(
            f"[bold]memalign serve[/] {engine.model_name} on http://{host}:{port}/v1 "
            f"({len(steerings)} persona(s), state: {state or 'RAM only'})"
        )
        server = uvicorn.Server(uvicorn.Config(create_app(engine, keys), host=host, port=port, log_level="warning"))
        server.run()
