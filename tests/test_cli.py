"""The CLI: models, info (every architecture), and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from memalign.cli import app
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
    for key in ("num_layers", "hidden_size", "rope_type", "rope_theta", "layer_types", "has_qk_norm",
                "parameters", "dtype"):
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
    return subprocess.run([sys.executable, "-m", "memalign", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_errors_are_one_line_not_tracebacks():
    proc = _run_cli("info", "/nonexistent/model.gguf")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_offline_hub_id_is_clear():
    proc = _run_cli("info", "Qwen/Qwen3-8B", env_extra={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Hugging Face hub" in proc.stderr and "preset" in proc.stderr
