"""Grouped low-rank deltas: every row of a batch adds the LoRA delta of its own slot, in one launch.

For each row ``n`` with ``slot = slots[n] >= 0``::

    y[n] += B[slot] @ (A[slot] @ x[n])      A: (K, R, in), B: (K, out, R), scale folded into B

Rows with ``slot < 0`` run on the base weights and are left untouched. This is the BGMV operator of
Punica / S-LoRA (and vLLM's ``lora_shrink`` / ``lora_expand``), written for our slot buffers: two kernels,
``shrink`` (x -> t = A x, (N, R) in float32, one program per row, the input dimension in tiles) and ``expand``
(y += B t, one program per row and tile of outputs). One launch serves every slot, so the cost grows with
the rows, not with the number of distinct versions in the batch. The rank R is small (<= 64 here), so a
row's A tile and t stay in registers; each program reads only its row's slot, so an empty slot is never read.
A prefill batch passes one row per token (the caller repeats each sequence's slot).
"""

from __future__ import annotations

import torch

from aphrodite.kernels.triton_compat import HAS_TRITON, tl, triton


@triton.jit
def _shrink_kernel(
    x_ptr,  # *f32 | *bf16 | *f16 (N, IN): input rows
    a_ptr,  # same dtype (K, R, IN): A of every slot
    slots_ptr,  # *i32 (N,): slot of each row, < 0 for none
    t_ptr,  # *f32 (N, R): A[slot] @ x, written for rows with a slot
    IN,  # input features
    R,  # padded rank
    BLOCK_R: tl.constexpr,  # power of two >= R
    BLOCK_K: tl.constexpr,  # input features per tile
):
    n = tl.program_id(0).to(tl.int64)
    slot = tl.load(slots_ptr + n).to(tl.int64)
    safe = tl.maximum(slot, 0)
    r_lim = tl.where(slot >= 0, R, 0)  # a row without a slot masks every load and store away
    rs = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for k0 in range(0, IN, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + n * IN + ks, mask=ks < tl.where(slot >= 0, IN, 0), other=0.0).to(tl.float32)
        a_mask = (rs[:, None] < r_lim) & (ks[None, :] < IN)
        a = tl.load(a_ptr + safe * R * IN + rs[:, None] * IN + ks[None, :], mask=a_mask, other=0.0)
        acc += tl.sum(a.to(tl.float32) * x[None, :], axis=1)  # (BLOCK_R,)
    tl.store(t_ptr + n * R + rs, acc, mask=rs < r_lim)


@triton.jit
def _expand_kernel(
    t_ptr,  # *f32 (N, R): the shrink's output
    b_ptr,  # *f32 | *bf16 | *f16 (K, OUT, R): B of every slot (scale folded in), any strides
    slots_ptr,  # *i32 (N,): slot of each row, < 0 for none
    y_ptr,  # same dtype as B (N, OUT): the base output, updated in place
    OUT,  # output features
    R,  # padded rank
    stride_bk, stride_bo, stride_br,  # B's strides
    BLOCK_R: tl.constexpr,  # power of two >= R
    BLOCK_O: tl.constexpr,  # output features per program
):
    n = tl.program_id(0).to(tl.int64)
    pid_o = tl.program_id(1)
    slot = tl.load(slots_ptr + n).to(tl.int64)
    safe = tl.maximum(slot, 0)
    r_lim = tl.where(slot >= 0, R, 0)
    o_lim = tl.where(slot >= 0, OUT, 0)
    rs = tl.arange(0, BLOCK_R)
    os = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    t = tl.load(t_ptr + n * R + rs, mask=rs < r_lim, other=0.0)  # (BLOCK_R,)
    b_mask = (os[:, None] < o_lim) & (rs[None, :] < r_lim)
    b = tl.load(b_ptr + safe * stride_bk + os[:, None] * stride_bo + rs[None, :] * stride_br, mask=b_mask,
                other=0.0)
    delta = tl.sum(b.to(tl.float32) * t[None, :], axis=1)  # (BLOCK_O,)
    y_mask = os < o_lim
    y = tl.load(y_ptr + n * OUT + os, mask=y_mask, other=0.0)
    tl.store(y_ptr + n * OUT + os, (y.to(tl.float32) + delta).to(y.dtype), mask=y_mask)


def grouped_lora_triton(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, slots: torch.Tensor,
                        y: torch.Tensor, block_k: int = 128, block_o: int = 64) -> torch.Tensor:
    """``y[n] += b[slots[n]] @ a[slots[n]] @ x[n]`` for rows with ``slots[n] >= 0``, in place; returns ``y``.

    x (N, in), a (K, R, in), b (K, out, R), slots (N,) integer, y (N, out) on one device; b may have any strides
    (the layers keep B as (out, K, R) and pass a transposed view), the others are contiguous.
    """
    if not HAS_TRITON:
        raise RuntimeError("Triton is not installed; use grouped_lora_reference")
    N, IN = x.shape
    K, R, _ = a.shape
    OUT = b.shape[1]
    if a.shape[2] != IN or b.shape != (K, OUT, R) or y.shape != (N, OUT) or slots.shape != (N,):
        raise ValueError(f"shapes do not chain: x {tuple(x.shape)}, a {tuple(a.shape)}, b {tuple(b.shape)}, "
                         f"slots {tuple(slots.shape)}, y {tuple(y.shape)}")
    if not (x.is_contiguous() and a.is_contiguous() and y.is_contiguous()):
        raise ValueError("grouped_lora_triton needs contiguous tensors")
    if N == 0:
        return y
    slots = slots.to(torch.int32).contiguous()
    t = torch.empty(N, R, dtype=torch.float32, device=x.device)
    block_r = triton.next_power_of_2(R)
    _shrink_kernel[(N,)](x, a, slots, t, IN, R, BLOCK_R=block_r, BLOCK_K=min(block_k, triton.next_power_of_2(IN)))
    block_o = min(block_o, triton.next_power_of_2(OUT))
    _expand_kernel[(N, triton.cdiv(OUT, block_o))](t, b, slots, y, OUT, R, *b.stride(), BLOCK_R=block_r,
                                                   BLOCK_O=block_o)
    return y


def grouped_lora_reference(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, slots: torch.Tensor,
                           y: torch.Tensor) -> torch.Tensor:
    """The PyTorch reference: gather each row's A and B by slot, two batched matmuls, in float32."""
    has = slots >= 0
    idx = slots.clamp(min=0).long()
    t = torch.bmm(a[idx].float(), x.float()[:, :, None])  # (N, R, 1)
    delta = torch.bmm(b[idx].float(), t)[:, :, 0] * has[:, None]  # (N, out)
    y.copy_((y.float() + delta).to(y.dtype))
    return y
