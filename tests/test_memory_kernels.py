"""The private fused CPU attention kernel is optional: without it the public-op math path gives the same
output and log-sum-exp, for single attention calls and for a whole model with memory attached."""

from __future__ import annotations

import pytest
import torch

from memalign.memory import EMConfig, EpisodicMemory, kernels
from memalign.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_private_kernel_is_looked_up_once_and_optional():
    assert kernels.CPU_FLASH_ATTENTION is getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


@pytest.mark.parametrize("kind", ["causal", "mask", "dead_rows", "plain"])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fallback_equals_the_fused_kernel(kind, dtype, atol, monkeypatch):
    if kernels.CPU_FLASH_ATTENTION is None:
        pytest.skip("this torch has no fused CPU kernel to compare with")
    gen = torch.Generator().manual_seed(0)
    L = 7
    S = L if kind == "causal" else 11
    q = torch.randn(1, 4, L, 16, generator=gen).to(dtype)
    k, v = torch.randn(1, 2, S, 16, generator=gen).to(dtype), torch.randn(1, 2, S, 16, generator=gen).to(dtype)
    mask = None
    if kind in ("mask", "dead_rows"):
        mask = torch.rand(L, S, generator=gen) > 0.5
        mask[:, 0] = True
        if kind == "dead_rows":
            mask[2] = False  # a row that sees nothing: output 0, lse -inf on both paths
    fused = kernels.attend(q, k, v, 0.25, mask=mask, causal=kind == "causal")
    monkeypatch.setattr(kernels, "CPU_FLASH_ATTENTION", None)
    fallback = kernels.attend(q, k, v, 0.25, mask=mask, causal=kind == "causal")
    assert fallback[0].dtype == fused[0].dtype == dtype
    torch.testing.assert_close(fallback[0].float(), fused[0].float(), atol=atol, rtol=atol)
    torch.testing.assert_close(fallback[1], fused[1], atol=atol, rtol=atol)
    if kind == "dead_rows":
        assert torch.isneginf(fallback[1][..., 2]).all() and (fallback[0][..., 2, :] == 0).all()


def test_model_with_memory_gives_the_same_logits_without_the_fused_kernel(monkeypatch):
    model = tiny_model("qwen3")
    ids = torch.randint(3, 500, (1, 200), generator=torch.Generator().manual_seed(0))
    cfg = EMConfig(n_init=4, n_local=32, n_mem=32, chunk_size=16, min_block_size=2, max_block_size=8)
    with EpisodicMemory(model, cfg) as mem:
        _, fused = mem.prefill(ids)
    monkeypatch.setattr(kernels, "CPU_FLASH_ATTENTION", None)
    with EpisodicMemory(model, cfg) as mem:
        _, fallback = mem.prefill(ids)
    torch.testing.assert_close(fallback, fused, atol=1e-4, rtol=1e-4)
