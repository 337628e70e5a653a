"""The CLI: models, info (every architecture), and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from memalign.cli import app
from memalign.errors import ConfigError
from memalign.testing import TINY_KINDS, tiny_config

runner = CliRunner()


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_info_json_every_architecture(kind):
    result = runner.invoke(app, ["info", f"tiny:{kind}", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    cfg = tiny_config(kind)
    assert data["model_type"] == cfg.model_type
    assert data["num_heads"] == cfg.num_attention_heads and data["num_kv_heads"] == cfg.num_key_value_heads
    assert data["head_dim"] == getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    for key in (
        "num_layers",
        "hidden_size",
        "rope_type",
        "rope_theta",
        "layer_types",
        "has_qk_norm",
        "parameters",
        "dtype",
    ):
        assert key in data
    assert data["parameters"] > 0


def test_models_lists_presets(isolated_cache):
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "gemma3-270m" in result.output and "qwen2.5-coder" in result.output


def _run_cli(*args, env_extra=None):
    import os

    env = {**os.environ, "MEMALIGN_PROGRESS": "0", **(env_extra or {})}
    # `python -m memalign` is what benchmarks/ scripts call, so the CLI's subprocess tests go through it.
    return subprocess.run(
        [sys.executable, "-m", "memalign", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_errors_are_one_line_not_tracebacks():
    proc = _run_cli("info", "/nonexistent/model.gguf")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_offline_hub_id_is_clear():
    proc = _run_cli("info", "Qwen/Qwen3-8B", env_extra={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Hugging Face hub" in proc.stderr and "preset" in proc.stderr


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError("unknown dtype 'int3'"),
        RuntimeError("Expected one of cpu, cuda, xpu, mps, meta device type at start of device string: gpu"),
        AssertionError("Torch not compiled with CUDA enabled"),
        RuntimeError("PyTorch is not linked with support for mps devices"),
    ],
    ids=["memalign-error", "torch-device-parse", "torch-no-cuda", "torch-no-mps"],
)
def test_main_turns_user_errors_into_one_red_line(exc, monkeypatch, capsys):
    import memalign.cli as cli

    def raise_it(**kwargs):
        raise exc

    monkeypatch.setattr(cli.display, "install", lambda: None)  # keep this process's logging as it is
    monkeypatch.setattr(cli, "app", raise_it)
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert str(exc).split(":")[0] in err


@pytest.mark.parametrize("exc", [RuntimeError("mat1 and mat2 shapes cannot be multiplied"), AssertionError()])
def test_main_keeps_the_traceback_of_a_bug(exc, monkeypatch):
    import memalign.cli as cli

    def raise_it(**kwargs):
        raise exc

    monkeypatch.setattr(cli.display, "install", lambda: None)
    monkeypatch.setattr(cli, "app", raise_it)
    with pytest.raises(type(exc)):
        cli.main()
