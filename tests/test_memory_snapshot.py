"""EpisodicMemory snapshots: save, restore, continue bit-identically; atomic; mismatches refused."""

from __future__ import annotations

import json

import pytest
import torch

from memalign.errors import DataError, MemalignError
from memalign.memory import EMConfig, EpisodicMemory
from memalign.memory.snapshot import MANIFEST_FILE, SNAPSHOT_FORMAT, load_snapshot, read_manifest, save_snapshot
from memalign.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = EMConfig(n_init=2, n_local=16, n_mem=16, chunk_size=8, min_block_size=2, max_block_size=8)


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 500, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["qwen3", "gemma3_text"])
def test_restored_memory_continues_exactly_like_the_saved_one(tmp_path, kind):
    model = tiny_model(kind)
    with EpisodicMemory(model, CFG) as mem:
        cache, _ = mem.prefill(_ids(90))  # several windows: events, sinks, pending segmentation
        assert any(row["events"] for row in cache.stats()) or kind == "gemma3_text"
        save_snapshot(cache, tmp_path / "snap", extra={"note": "turn 1"})
        restored, extra = load_snapshot(mem, tmp_path / "snap")
        assert extra == {"note": "turn 1"}
        assert restored.get_seq_length() == cache.get_seq_length()
        follow = _ids(30, seed=1)
        _, want = mem.prefill(follow, cache=cache)
        _, got = mem.prefill(follow, cache=restored)
        assert torch.equal(want, got)
        assert mem.decode(cache, want, 5).tolist() == mem.decode(restored, got, 5).tolist()


def test_snapshot_keeps_the_unfed_token_and_rewrites_atomically(tmp_path):
    model = tiny_model("qwen3")
    with EpisodicMemory(model, CFG) as mem:
        cache, logits = mem.prefill(_ids(20))
        mem.decode(cache, logits, 3)  # leaves its last token unfed
        save_snapshot(cache, tmp_path)
        first = read_manifest(tmp_path)["tensors"]
        save_snapshot(cache, tmp_path)
        manifest = read_manifest(tmp_path)
        assert manifest["format"] == SNAPSHOT_FORMAT and manifest["tensors"] != first
        # the previous tensor file is gone, no temporary file is left behind
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MANIFEST_FILE, manifest["tensors"]])
        restored, _ = load_snapshot(mem, tmp_path)
        assert torch.equal(restored.unfed, cache.unfed)


def test_snapshot_refuses_another_model_config_or_a_broken_directory(tmp_path):
    model = tiny_model("qwen3")
    with EpisodicMemory(model, CFG) as mem:
        cache, _ = mem.prefill(_ids(20))
        save_snapshot(cache, tmp_path / "a")
    with EpisodicMemory(model, CFG.replace(n_local=32)) as other, pytest.raises(MemalignError, match="n_local"):
        load_snapshot(other, tmp_path / "a")
    with EpisodicMemory(tiny_model("qwen3", seed=1), CFG) as other, pytest.raises(MemalignError, match="fingerprint"):
        load_snapshot(other, tmp_path / "a")
    with pytest.raises(DataError, match="not a memory snapshot"):
        read_manifest(tmp_path / "missing")
    manifest = json.loads((tmp_path / "a" / MANIFEST_FILE).read_text())
    (tmp_path / "a" / manifest["tensors"]).write_bytes(b"torn")
    with EpisodicMemory(model, CFG) as mem, pytest.raises(DataError, match="cannot read"):
        load_snapshot(mem, tmp_path / "a")
