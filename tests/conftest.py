"""Shared fixtures: tiny random models of every supported architecture, an isolated cache directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MEMALIGN_PROGRESS", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from a second thread, and on a busy machine each op then waits for it
    (measured: a tiny forward takes 1 s with 2 threads vs 8 ms with 1 under load). Modules that run
    tiny models opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A fresh MEMALIGN_CACHE so tests never touch (or depend on) the user's real cache."""
    monkeypatch.setenv("MEMALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def real_cache_env():
    """Slow tests reuse the developer's/CI's cache so a preset converts once per machine."""
    return os.environ.get("MEMALIGN_CACHE")


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (../shared/data is absent)")
    return path
