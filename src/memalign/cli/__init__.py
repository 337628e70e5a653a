"""The ``memalign`` command. Subcommand groups live in sibling modules and register on ``app``."""

from __future__ import annotations

import re
import sys

import click
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
from memalign.cli import bench, chat, models_cmd, persona, persona_eval, serve  # noqa: E402, F401

# What torch raises when a device string is malformed or names hardware this build or machine lacks
# (torch.device parsing, lazy CUDA/XPU/MPS initialisation). Matched on the message so that any other
# RuntimeError or AssertionError, which would be a bug, keeps its traceback.
_TORCH_DEVICE_ERROR = re.compile(
    r"^(Expected one of cpu, cuda|Invalid device string|Device string must not be empty"
    r"|Torch not compiled with \w+ enabled|PyTorch is not linked with support for \w+ devices"
    r"|Found no NVIDIA driver|No CUDA GPUs are available|CUDA error: invalid device ordinal)"
)


def is_torch_device_error(exc: BaseException) -> bool:
    """Whether ``exc`` is torch refusing a device the user asked for (not a failure inside memalign)."""
    return isinstance(exc, RuntimeError | AssertionError) and bool(_TORCH_DEVICE_ERROR.match(str(exc).strip()))


# typer >= 0.2x raises its own vendored click exceptions (all under ``typer.TyperException``); older typer raises
# click's. Either way a usage error carries ``format_message()``.
_CLICK_ERRORS = (typer.TyperException, click.ClickException)


def main() -> None:
    """Entry point: user errors become one red line and exit code 2, never a traceback."""
    display.install()
    try:
        # Not standalone: click would print a usage box for a bad option; here it becomes one line too.
        code = app(prog_name="memalign", standalone_mode=False)  # same name under `python -m memalign`
    except _CLICK_ERRORS as exc:  # a bad option or value: typer/click's message, on one line
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `memalign bench` alone: the group's help
            display.console.print(ctx.get_help() if ctx else exc.format_message(), highlight=False)
        else:
            command = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            display.error(" ".join(exc.format_message().split()) + command)
        sys.exit(2)
    except (typer.Abort, click.Abort):
        sys.exit(130)
    except MemalignError as exc:
        display.error(str(exc))
        sys.exit(2)
    except (RuntimeError, AssertionError) as exc:
        if not is_torch_device_error(exc):
            raise
        display.error(f"{str(exc).strip().splitlines()[0]} (check --device; cpu always works)")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
