"""Attention stages that return their log-sum-exp, and the fp32 LSE merge of several stages.

EM-LLM attends each chunk of queries to several key sets (the causal chunk, the rest of the local
window, a band at the window edge, the sinks/pending/retrieved memory) that differ in positions and
masks. Each set is computed by a fused kernel that also yields the per-row log-sum-exp, and the
partial outputs are merged exactly in fp32: no concatenated logit matrix in bf16, no double softmax.
On CPU this is ATen's flash kernel (GQA-native, returns LSE). That kernel is a private ATen op
(``_scaled_dot_product_flash_attention_for_cpu``), so it is looked up once at import and used only if
this torch has it; otherwise, and on other devices, a chunked fp32 math path built from public ops
computes the same output and LSE. (The public ``scaled_dot_product_attention`` returns no LSE, which
the merge needs.)

Memory layers also need each window key's attention mass; :func:`window_attention` computes the local
window, the merge with the memory stage and that mass in one blocked pass.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")
_MATH_KEY_CHUNK = 2048
# The private fused CPU kernel, or None when this torch build does not have it (then the math path runs).
CPU_FLASH_ATTENTION = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CPU_FLASH_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    mask: torch.Tensor | None = None,
    causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of ``q`` [B,H,L,D] over ``k,v`` [B,Hkv,S,D] -> (out [B,H,L,D], lse [B,H,L] fp32).

    ``mask`` is boolean [L,S] (True = visible), shared by batch and heads. ``causal`` requires L == S.
    Rows that see no key get output 0 and lse -inf, so they vanish in :func:`merge`.
    """
    B, H, L, D = q.shape
    if k.shape[-2] == 0 or L == 0:
        return q.new_zeros(B, H, L, v.shape[-1]), q.new_full((B, H, L), NEG_INF, dtype=torch.float32)
    if causal and mask is not None:
        raise ValueError("pass either causal=True or a mask")
    if CPU_FLASH_ATTENTION is not None and q.device.type == "cpu" and q.dtype in _CPU_FLASH_DTYPES:
        bias = None
        if mask is not None:
            bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, NEG_INF)
        out, lse = CPU_FLASH_ATTENTION(q, k, v, 0.0, causal, attn_mask=bias, scale=scale)
        lse = lse.float()
        if mask is not None:
            dead = ~mask.any(-1)
            if bool(dead.any()):  # the kernel reports lse 0 for rows that see nothing
                lse = lse.masked_fill(dead, NEG_INF)
                out = out.masked_fill(dead[:, None], 0.0)
        return out, lse
    return _attend_math(q, k, v, scale, mask, causal)


def _attend_math(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`attend` from public ops only: fp32 logits over key chunks, merged by their LSE."""
    B, H, L, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    g = H // Hkv
    qf = q.float().reshape(B, Hkv, g * L, D)  # q may be a transposed view: reshape copies then
    if causal:
        mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
    lse_parts, out_parts = [], []
    for start in range(0, S, _MATH_KEY_CHUNK):
        kc = k[:, :, start : start + _MATH_KEY_CHUNK].float()
        vc = v[:, :, start : start + _MATH_KEY_CHUNK].float()
        s = (qf @ kc.transpose(-1, -2)).mul_(scale).view(B, Hkv, g, L, -1)
        if mask is not None:
            s = s.masked_fill(~mask[:, start : start + _MATH_KEY_CHUNK], NEG_INF)
        lse_c = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - lse_c.unsqueeze(-1).clamp_min(-1e30)).nan_to_num_(0.0)
        out_parts.append((p.view(B, Hkv, g * L, -1) @ vc).view(B, H, L, -1))
        lse_parts.append(lse_c.reshape(B, H, L))
    out = merge(list(zip(out_parts, lse_parts, strict=True)), out_dtype=torch.float32)[0]
    lse = torch.logsumexp(torch.stack(lse_parts), dim=0)
    return out.to(q.dtype), lse


def merge(
    parts: list[tuple[torch.Tensor, torch.Tensor]], out_dtype: torch.dtype | None = None
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


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    q_start: int,
    k_start: int,
    window: int,
    other: tuple[torch.Tensor, torch.Tensor] | None = None,
    block: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sliding-window attention that also returns the attention mass each key receives.

    ``q`` [H,L,D] at positions ``q_start..``, ``k,v`` [Hkv,S,D] at positions ``k_start..``; query i sees
    key j iff ``0 <= i - j < window``. ``other`` (out [H,L,D], lse [H,L]) is attention over a disjoint key
    set (the memory stage), merged in: returns (out [H,L,D] in q's dtype, lse [H,L] fp32, mass [H,S] fp32),
    where ``mass[h, j]`` sums the *final* probabilities (after the merge) that the queries give key j.

    Why not the fused kernel plus a second pass for the mass: representative keys need every key's
    attention mass from all queries of its window; recomputing it at eviction repeats the Q.K products
    and the exponentials the attention already did, which on CPU costs as much as the attention itself.
    Here one pass over query blocks does both: logits, one exp, P.V and a weighted column sum of P,
    with only the window's band (plus the block's two triangular edges) computed and masked.
    """
    H, L, D = q.shape
    Hkv, S = k.shape[0], k.shape[1]
    g = H // Hkv
    block = block or (64 if q.device.type == "cpu" else 512)
    qf = q.float().view(Hkv, g, L, D)
    kt = k.float().transpose(-1, -2)  # [Hkv,D,S]
    vf = v.float()
    out = torch.empty(Hkv, g, L, v.shape[-1], dtype=torch.float32, device=q.device)
    lse = torch.empty(Hkv, g, L, dtype=torch.float32, device=q.device)
    mass = torch.zeros(Hkv, g, S, dtype=torch.float32, device=q.device)
    if other is not None:
        o_other = other[0].float().view(Hkv, g, L, -1)
        lse_other = other[1].float().view(Hkv, g, L)
    for a in range(0, L, block):
        b = min(L, a + block)
        n_q, first = b - a, q_start + a
        k0 = max(k_start, first - window + 1)
        k1 = min(k_start + S, first + n_q)
        s = torch.matmul(qf[:, :, a:b].reshape(Hkv, g * n_q, D), kt[:, :, k0 - k_start : k1 - k_start])
        s = s.view(Hkv, g, n_q, k1 - k0).mul_(scale)
        q_pos = torch.arange(first, first + n_q, device=q.device)[:, None]
        # Only two column ranges can hold invisible keys: newer than the block's first query, and older
        # than its last query's window.
        for c0, c1 in ((max(k0, first + 1), k1), (k0, min(k1, first + n_q - window))):
            if c0 < c1:
                diff = q_pos - torch.arange(c0, c1, device=q.device)[None, :]
                s[..., c0 - k0 : c1 - k0].masked_fill_((diff < 0) | (diff >= window), NEG_INF)
        row_max = s.amax(dim=-1, keepdim=True).clamp_min_(-1e30)  # rows that see nothing stay finite
        s.sub_(row_max).exp_()
        lse_b = s.sum(dim=-1).log_().add_(row_max[..., 0])
        if other is not None:
            lse_b = torch.logaddexp(lse_b, lse_other[:, :, a:b])
        weight = torch.exp(row_max[..., 0] - lse_b.clamp_min(-1e30))  # exp(s - max) * weight = final probability
        o = torch.matmul(s.view(Hkv, g * n_q, -1), vf[:, k0 - k_start : k1 - k_start]).view(Hkv, g, n_q, -1)
        o.mul_(weight.unsqueeze(-1))
        if other is not None:
            w_other = torch.exp(lse_other[:, :, a:b] - lse_b.clamp_min(-1e30)).nan_to_num_(0.0)
            o.addcmul_(o_other[:, :, a:b], w_other.unsqueeze(-1))
        out[:, :, a:b] = o
        lse[:, :, a:b] = lse_b
        mass[:, :, k0 - k_start : k1 - k_start] += torch.matmul(weight.unsqueeze(-2), s).squeeze(-2)
    return out.view(H, L, -1).to(q.dtype), lse.view(H, L), mass.view(H, S)
