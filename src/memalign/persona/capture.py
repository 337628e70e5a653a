"""Per-head attention outputs read at the input of every layer's ``o_proj``, and a model fingerprint.

The input of ``o_proj`` is the concatenation of the query heads' outputs (``num_heads * head_dim`` wide,
which is *not* the hidden size on Qwen3), so a ``register_forward_pre_hook`` there sees exactly what
PAlign's copied modeling files exposed through an inserted Identity module, on every architecture.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from memalign.errors import ConfigError, DataError, UnsupportedArchitectureError
from memalign.models.arch import ArchSpec, get_arch_spec

ACTIVATIONS_FORMAT = "memalign.head_activations/1"


def check_o_proj_widths(model: nn.Module, spec: ArchSpec) -> None:
    """Refuse a model whose ``o_proj`` input is not heads x head_dim (the per-head split would be wrong)."""
    for i, o_proj in enumerate(spec.o_projs(model)):
        width = getattr(o_proj, "in_features", None)
        if width != spec.q_size:
            raise UnsupportedArchitectureError(
                f"layer {i}: o_proj takes {width} inputs, expected num_heads x head_dim = {spec.num_heads} x "
                f"{spec.head_dim} = {spec.q_size}; per-head steering needs that layout"
            )


@contextmanager
def capture_last_token(model: nn.Module, spec: ArchSpec | None = None) -> Iterator[list[list[torch.Tensor]]]:
    """Record each forward's o_proj input at the last position, per layer, as (B, heads, head_dim) float32.

    Yields ``records[layer]``: one tensor per forward call, in call order. Hooks are removed on exit.
    """
    spec = spec or get_arch_spec(model)
    check_o_proj_widths(model, spec)
    records: list[list[torch.Tensor]] = [[] for _ in range(spec.num_layers)]
    handles = []

    def make_hook(layer: int):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            records[layer].append(x[:, -1].detach().float().reshape(x.shape[0], spec.num_heads, spec.head_dim).cpu())

        return hook

    try:
        for i, o_proj in enumerate(spec.o_projs(model)):
            handles.append(o_proj.register_forward_pre_hook(make_hook(i)))
        yield records
    finally:
        for handle in handles:
            handle.remove()


def stack_records(records: list[list[torch.Tensor]]) -> torch.Tensor:
    """(N, layers, heads, head_dim) from :func:`capture_last_token`'s per-layer lists."""
    return torch.stack([torch.cat(per_layer) for per_layer in records], dim=1)


def model_fingerprint(model: PreTrainedModel) -> str:
    """A short hash of a few o_proj weight rows, stable across bf16/fp32 loads of the same checkpoint.

    Names are not enough: a preset name, a local copy and a hub id can be the same weights, and two
    checkpoints can share an architecture (base vs coder). Rounding to bf16 first makes the hash
    independent of the dtype the model was loaded in.
    """
    spec = get_arch_spec(model)
    digest = hashlib.sha256()
    for layer in sorted({0, spec.num_layers - 1}):
        weight = spec.o_proj(model, layer).weight
        digest.update(weight[:4].detach().to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return digest.hexdigest()[:16]


def model_identity(model: PreTrainedModel) -> dict[str, Any]:
    """What an artifact or a cache entry records about the model it was made with."""
    spec = get_arch_spec(model)
    return {
        "model_id": str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")),
        "model_type": spec.model_type,
        "num_layers": spec.num_layers,
        "num_heads": spec.num_heads,
        "head_dim": spec.head_dim,
        "hidden_size": spec.hidden_size,
        "fingerprint": model_fingerprint(model),
    }


def cache_key(*parts: Any) -> str:
    """Hash of JSON-serialisable parts (model identity, dtype, prompt token ids, ...)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class HeadActivations:
    """Per item, the per-head o_proj inputs at the answer token of its agree and disagree prompts.

    ``agree``/``disagree`` are float32 (items, layers, heads, head_dim), rows in ``item_ids`` order.
    """

    item_ids: tuple[int, ...]
    agree: torch.Tensor
    disagree: torch.Tensor

    def __post_init__(self) -> None:
        shape = self.agree.shape
        if shape != self.disagree.shape or self.agree.dim() != 4 or shape[0] != len(self.item_ids):
            raise ConfigError("HeadActivations: agree/disagree must both be (items, layers, heads, head_dim)")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(layers, heads, head_dim)."""
        return tuple(self.agree.shape[1:])  # type: ignore[return-value]

    def samples(self, stances: Mapping[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Probe data for the items with a non-zero stance: X (2n, layers*heads, head_dim), y (2n,), groups.

        An item the person agrees with labels its agree prompt 1 and its disagree prompt 0; an item they
        disagree with the reverse ("1" = the answer that matches this person). ``groups`` holds the item id
        of each row so validation can keep an item's two prompts on the same side.
        """
        index = {item_id: n for n, item_id in enumerate(self.item_ids)}
        rows, labels, groups = [], [], []
        for item_id, stance in stances.items():
            if stance == 0:
                continue
            if item_id not in index:
                raise ConfigError(f"no activations for item {item_id}")
            rows.append(index[item_id])
            labels += [1.0 if stance > 0 else 0.0, 0.0 if stance > 0 else 1.0]
            groups += [item_id, item_id]
        if not rows:
            empty = torch.zeros(0, self.shape[0] * self.shape[1], self.shape[2])
            return empty, torch.zeros(0), torch.zeros(0, dtype=torch.long)
        sel = torch.tensor(rows, dtype=torch.long)
        pairs = torch.stack([self.agree[sel], self.disagree[sel]], dim=1)  # (n, 2, L, H, D)
        x = pairs.reshape(2 * len(rows), self.shape[0] * self.shape[1], self.shape[2])
        return x, torch.tensor(labels), torch.tensor(groups, dtype=torch.long)

    def save(self, path: str | Path, meta: Mapping[str, Any] | None = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        save_file(
            {
                "agree": self.agree.contiguous(),
                "disagree": self.disagree.contiguous(),
                "item_ids": torch.tensor(self.item_ids, dtype=torch.long),
            },
            str(tmp),
            metadata={"memalign": json.dumps({"format": ACTIVATIONS_FORMAT, **(meta or {})})},
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> HeadActivations:
        with safe_open(str(path), framework="pt") as fh:
            header = json.loads((fh.metadata() or {}).get("memalign", "{}"))
        if header.get("format") != ACTIVATIONS_FORMAT:
            raise DataError(f"{path} is not a memalign activations file")
        tensors = load_file(str(path))
        return cls(tuple(tensors["item_ids"].tolist()), tensors["agree"], tensors["disagree"])
