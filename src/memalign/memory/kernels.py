"""Attention stages that return their log-sum-exp, and the fp32 LSE merge of several stages.

EM-LLM attends each chunk of queries to several key sets (the causal chunk, the rest of the local
window, a band at the window edge, the sinks/pending/retrieved memory) that differ in positions and
masks. Each set is computed by a fused kernel that also yields the per-row log-sum-exp, and the
partial outputs are merged exactly in fp32: no concatenated logit matrix in bf16, no double softmax.
On CPU this is ATen's flash kernel (GQA-native, returns LSE); elsewhere a chunked math fallback.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")
_MATH_KEY_CHUNK = 2048


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None = None,
           causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of ``q`` [B,H,L,D] over ``k,v`` [B,Hkv,S,D] -> (out [B,H,L,D], lse [B,H,L] fp32).

    ``mask`` is boolean [L,S] (True = visible), shared by batch and heads. ``causal`` requires L == S.
    Rows that see no key get output 0 and lse -inf, so they vanish in :func:`merge`.
    """
    B, H, L, D = q.shape
    if k.shape[-2] == 0 or L == 0:
        return q.new_zeros(B, H, L, v.shape[-1]), q.new_full((B, H, L), NEG_INF, dtype=torch.float32)
    if causal and mask is not None:
        raise ValueError("pass either causal=True or a mask")
    if q.device.type == "cpu" and q.dtype in (torch.float32, torch.bfloat16, torch.float16):
        bias = None
        if mask is not None:
            bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, NEG_INF)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, attn_mask=bias, scale=scale
        )
        lse = lse.float()
        if mask is not None:
            dead = ~mask.any(-1)
            if bool(dead.any()):  # the kernel reports lse 0 for rows that see nothing
                lse = lse.masked_fill(dead, NEG_INF)
                out = out.masked_fill(dead[:, None], 0.0)
        return out, lse
    return _attend_math(q, k, v, scale, mask, causal)


def _attend_math(q, k, v, scale, mask, causal):
    B, H, L, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    g = H // Hkv
    qf = q.float().view(B, Hkv, g * L, D)
    if causal:
        mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
    lse_parts, out_parts = [], []
    for start in range(0, S, _MATH_KEY_CHUNK):
        kc = k[:, :, start:start + _MATH_KEY_CHUNK].float()
        vc = v[:, :, start:start + _MATH_KEY_CHUNK].float()
        s = (qf @ kc.transpose(-1, -2)).mul_(scale).view(B, Hkv, g, L, -1)
        if mask is not None:
            s = s.masked_fill(~mask[:, start:start + _MATH_KEY_CHUNK], NEG_INF)
        lse_c = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - lse_c.unsqueeze(-1).clamp_min(-1e30)).nan_to_num_(0.0)
        out_parts.append((p.view(B, Hkv, g * L, -1) @ vc).view(B, H, L, -1))
        lse_parts.append(lse_c.reshape(B, H, L))
    out = merge(list(zip(out_parts, lse_parts, strict=True)), out_dtype=torch.float32)[0]
    lse = torch.logsumexp(torch.stack(lse_parts), dim=0)
    return out.to(q.dtype), lse


def merge(parts: list[tuple[torch.Tensor, torch.Tensor]], out_dtype: torch.dtype | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact combination of attention over disjoint key sets: weights exp(lse_i - lse) in fp32."""
    if len(parts) == 1:
        out, lse = parts[0]
        return out.to(out_dtype or out.dtype), lse
    lses = torch.stack([lse for _, lse in parts])  # [P,B,H,L]
    total = torch.logsumexp(lses, dim=0)
    weights = torch.exp(lses - total.clamp_min(-1e30)).nan_to_num_(0.0).unsqueeze(-1)
    out = parts[0][0].float().mul_(weights[0])
    for w, (o, _) in zip(weights[1:], parts[1:], strict=True):
        out.addcmul_(o.float(), w)
    return out.to(out_dtype or parts[0][0].dtype), total


def key_mass(q: torch.Tensor, k: torch.Tensor, scale: float, lse: torch.Tensor, mask: torch.Tensor | None = None,
             causal: bool = False, query_chunk: int = 512) -> torch.Tensor:
    """Attention probability each key receives, summed over queries: [B,H,S] fp32.

    ``lse`` is the final (merged) log-sum-exp of each query, so these are the true probabilities of the
    full attention, computed block by block without keeping a [L,S] probability matrix. With
    ``causal`` (L == S) key j only receives mass from queries i >= j.
    """
    B, H, L, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    g = H // Hkv
    total = torch.zeros(B, Hkv, g, S, dtype=torch.float32, device=q.device)
    if S == 0 or L == 0:
        return total.view(B, H, S)
    kt = k.float().unsqueeze(2).transpose(-1, -2)  # [B,Hkv,1,D,S]
    for start in range(0, L, query_chunk):
        stop = min(L, start + query_chunk)
        qc = q[:, :, start:stop].float().view(B, Hkv, g, stop - start, D)
        s = torch.matmul(qc, kt).mul_(scale)  # [B,Hkv,g,l,S]
        s.sub_(lse[:, :, start:stop].view(B, Hkv, g, stop - start, 1)).exp_()
        if causal:
            s.tril_(diagonal=start)
        elif mask is not None:
            s.mul_(mask[start:stop])
        total += s.sum(dim=-2)
    return total.view(B, H, S)
