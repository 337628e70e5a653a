"""Every bad model file or value a user can pass is refused with one clear MemalignError.

Each case goes through the API (``load_model``) and through the CLI (``python -m memalign chat``: exit
code 2, one line on stderr, no traceback), and neither leaves a file behind: no half-written cache
folder, no change next to the bad input.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from memalign import load_model
from memalign.errors import MemalignError
from memalign.models import loading
from memalign.testing import tiny_model, tiny_tokenizer, write_tiny_qwen3_gguf

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _empty_gguf(d: Path) -> str:
    (d / "empty.gguf").write_bytes(b"")
    return str(d / "empty.gguf")


def _truncated_gguf(d: Path) -> str:
    path, _ = write_tiny_qwen3_gguf(d / "tiny.gguf")
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)  # as if a download stopped half-way
    return str(path)


def _random_gguf(d: Path) -> str:
    (d / "random.gguf").write_bytes(random.Random(0).randbytes(4096))
    return str(d / "random.gguf")


def _truncated_safetensors_dir(d: Path) -> str:
    tiny_model("llama").save_pretrained(d / "model")
    tiny_tokenizer().save_pretrained(d / "model")
    weights = d / "model" / "model.safetensors"
    with weights.open("r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)
    return str(d / "model")


@dataclass(frozen=True)
class BadInput:
    """One thing a user can get wrong: the model argument, extra options, and what the error must say."""

    id: str
    model: Callable[[Path], str] | str
    match: str
    options: dict[str, str] = field(default_factory=dict)
    offline: bool = False  # the hub must look unreachable (it is, on CI; this makes it so everywhere)
    unless: bool = False  # skip where the input is not bad on this machine (a real GPU)

    def build(self, directory: Path) -> str:
        return self.model(directory) if callable(self.model) else self.model

    def cli_args(self, model: str) -> list[str]:
        flags = [arg for key, value in self.options.items() for arg in (f"--{key}", value)]
        return ["chat", "-m", model, "--prompt", "hi", *flags]


CASES = [
    BadInput("empty-gguf", _empty_gguf, r"empty\.gguf is empty"),
    BadInput("truncated-gguf", _truncated_gguf, r"tiny\.gguf is damaged or truncated"),
    BadInput("random-bytes-gguf", _random_gguf, r"random\.gguf is not a GGUF file"),
    BadInput("truncated-safetensors-dir", _truncated_safetensors_dir, r"model\.safetensors is truncated"),
    BadInput("missing-path", lambda d: str(d / "no-such-model"), r"no-such-model.*not found"),
    BadInput("unknown-tiny-kind", "tiny:bogus", r"unknown tiny model kind 'bogus'; known: qwen3"),
    BadInput("preset-typo", "smollm2-135m-instruc", r"Did you mean the preset 'smollm2-135m-instruct'", offline=True),
    BadInput(
        "unreachable-hub-id",
        "memalign-test/no-such-model",
        r"Hugging Face hub cannot be reached.*hf download memalign-test/no-such-model.*preset",
        offline=True,
    ),
    BadInput("bogus-device", "tiny:llama", r"unknown device 'bogus'; use cpu", {"device": "bogus"}),
    BadInput(
        "cuda-on-cpu-torch",
        "tiny:llama",
        r"'cuda' is not available",
        {"device": "cuda"},
        unless=torch.cuda.is_available(),
    ),
    BadInput(
        "mps-unavailable",
        "tiny:llama",
        r"'mps' is not available",
        {"device": "mps"},
        unless=torch.backends.mps.is_available(),
    ),
    BadInput("bogus-dtype", "tiny:llama", r"unknown dtype 'bogus'", {"dtype": "bogus"}),
]
IDS = [case.id for case in CASES]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_api_raises_one_memalign_error(case, tmp_path, monkeypatch, isolated_cache):
    if case.unless:
        pytest.skip(f"{case.id}: not a bad input on this machine")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    model = case.build(inputs)
    before = _tree(inputs)
    if case.offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(loading, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(MemalignError, match=case.match) as err:
        load_model(model, **case.options)
    assert "\n" not in str(err.value)
    assert _tree(inputs) == before and not isolated_cache.exists()


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path, dict, dict]]:
    """Every CLI case, run as its own ``python -m memalign`` process, two at a time (startup dominates)."""
    prepared = {}
    for case in CASES:
        if case.unless:
            continue
        directory = tmp_path_factory.mktemp(case.id)
        (directory / "inputs").mkdir()
        model = case.build(directory / "inputs")
        env = {
            **os.environ,
            "MEMALIGN_PROGRESS": "0",
            "MEMALIGN_CACHE": str(directory / "cache"),
            "HF_HOME": str(directory / "hf"),
        }
        if case.offline:
            env["HF_HUB_OFFLINE"] = "1"
        prepared[case.id] = (case.cli_args(model), env, directory, _tree(directory))

    def run(item):
        case_id, (args, env, directory, before) = item
        proc = subprocess.run(
            [sys.executable, "-m", "memalign", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=directory,
            timeout=240,
        )
        return case_id, (proc, directory, before, _tree(directory))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, prepared.items()))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli_prints_one_red_line_and_exits_2(case, cli_runs):
    if case.unless:
        pytest.skip(f"{case.id}: not a bad input on this machine")
    proc, directory, before, after = cli_runs[case.id]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert re.search(case.match, lines[0]), lines[0]
    assert after == before, "the failed command left files behind"  # no cache/, hf/ or partial copies
