"""Where and in what precision a model runs: ``--device`` and ``--dtype`` checked before any loading.

Both are user input. A typo or a device this torch build cannot reach is refused here with a
:class:`~memalign.errors.ConfigError` that names the value and says what to use, before minutes of
preset installation or weight loading, and instead of an assertion deep inside ``torch.cuda``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from memalign.errors import ConfigError

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
# Device types memalign's attention paths are written for; others (meta, hpu, xla, ...) would load
# without weights or fail inside kernels memalign never exercised.
_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
_DEVICE_HELP = "use cpu, cuda, cuda:N, mps or xpu"


def resolve_device(device: str | torch.device) -> torch.device:
    """The ``torch.device`` for ``device``, or a :class:`ConfigError` if it is malformed or not available."""
    if isinstance(device, torch.device):
        parsed = device
    else:
        try:
            parsed = torch.device(str(device).strip())
        except RuntimeError:
            raise ConfigError(f"unknown device {device!r}; {_DEVICE_HELP}") from None
    if parsed.type not in _DEVICE_TYPES:
        raise ConfigError(f"device {str(parsed)!r} is not supported by memalign; {_DEVICE_HELP}")
    if parsed.type == "cuda":
        _check_cuda(parsed)
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device {str(parsed)!r} is not available: MPS needs Apple silicon with macOS 12.3+ and a torch "
            "build with MPS; use --device cpu"
        )
    elif parsed.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ConfigError(f"device {str(parsed)!r} is not available (no Intel GPU visible to torch); use --device cpu")
    return parsed


def _check_cuda(device: torch.device) -> None:
    if torch.version.cuda is None and torch.version.hip is None:
        raise ConfigError(
            f"device {str(device)!r} is not available: this torch build ({torch.__version__}) has no CUDA support. "
            "Install a CUDA build of torch, or use --device cpu"
        )
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {str(device)!r} is not available: torch finds no usable GPU (check the driver and "
            "CUDA_VISIBLE_DEVICES), or use --device cpu"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device {str(device)!r} does not exist: {count} GPU(s) visible (cuda:0 .. cuda:{count - 1})")


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """``auto``: bf16 where it is fast (GPUs with bf16, CPUs with AVX512-BF16/AMX), else fp32.

    On CPUs without native bf16 (e.g. AVX2-only) bf16 matmuls are emulated and several times slower
    than fp32 (measured 7x on an AVX2 EPYC), so ``auto`` must look at the hardware.
    """
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = dtype.lower() if isinstance(dtype, str) else None
    if key not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto or one of {', '.join(_DTYPES)}")
    return _DTYPES[key]


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 matmuls run natively on ``device`` (not emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
