"""Fused echo-state-network scan: every leaky-tanh step of many sequences in one launch.

For each sub-reservoir ``r`` and sequence ``b`` the kernel runs, for ``t < lengths[b]``::

    x[t + 1] = (1 - lr[r]) * x[t] + lr[r] * tanh(W[r] @ x[t] + drive[r, b, t])

``drive = W_in @ u + bias`` does not depend on the state, so callers compute it for all steps in
one matrix product before the launch; only the ``W @ x`` matvec stays in the sequential loop.

One persistent program owns whole sequences for all T steps (grid: sequence x sub-reservoir, so
every sub-reservoir of a DeepTreeESN level shares the launch). Two paths:

* resident (N <= ``RESIDENT_MAX_UNITS``): one sequence per program; W (N x N) is loaded once into
  registers and the state never leaves the chip between steps; only drive reads and state
  writes touch memory.
* tiled (any N): ``BLOCK_B`` sequences per program share each (BLOCK_K x BLOCK_N) tile of W,
  streamed from L2/HBM every step; the previous state is read back from the output buffer,
  with a CTA barrier between steps. At N = 2048 fp32 one program reads all 16 MB of W per step,
  so a single program is bandwidth-starved: ``reservoir_scan``'s auto dispatch sends
  N > ``AUTO_MAX_UNITS`` to the PyTorch loop (one cuBLAS GEMM per step over the whole batch).

Weights may be float32 or bfloat16 (upcast to float32 on load); drive, state and accumulation
are float32. The output buffer has ``T + 1`` slots: slot 0 holds ``x0``, slot ``t + 1`` the state
after step ``t``; slots past a sequence's length are unspecified (callers mask them) and its final
state is ``out[r, b, lengths[b]]``.
"""

from __future__ import annotations

import torch

from aphrodite.kernels.triton_compat import HAS_TRITON, tl, triton

RESIDENT_MAX_UNITS = 128  # 128 x 128 fp32 = 64 KiB of W: 64 registers/thread at 8 warps
AUTO_MAX_UNITS = 1024  # estimated single-program break-even against the cuBLAS loop (docs/reservoir.md)


@triton.jit
def _tanh(z):
    # tanh via exp: saturates to +-1 without NaN (exp overflows to inf, 2 / inf = 0)
    return 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)


@triton.jit
def _scan_resident_kernel(
    drive_ptr,  # *f32 (R, B, T, N): W_in u_t + bias for every step
    w_ptr,  # *f32 | *bf16 (R, N, N): recurrent weights, row i feeds unit i
    lr_ptr,  # *f32 (R,): leak rate of each sub-reservoir
    len_ptr,  # *i32 (B,): valid steps of each sequence
    out_ptr,  # *f32 (R, B, T + 1, N): slot 0 = x0 on entry, slot t + 1 = state after step t
    B,  # sequences
    T,  # padded steps
    N,  # units per sub-reservoir
    BLOCK_N: tl.constexpr,  # power of two >= N: all of W fits one register tile
):
    b = tl.program_id(0).to(tl.int64)
    r = tl.program_id(1).to(tl.int64)
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_N)
    w_mask = (rows[:, None] < N) & (cols[None, :] < N)
    # (BLOCK_N, BLOCK_N) loaded once, kept in registers for all T steps
    w = tl.load(w_ptr + r * N * N + rows[:, None] * N + cols[None, :], mask=w_mask, other=0.0)
    w = w.to(tl.float32)
    lr = tl.load(lr_ptr + r)
    n_steps = tl.load(len_ptr + b)
    seq = r * B + b
    drive = drive_ptr + seq * T * N
    out = out_ptr + seq * (T + 1) * N
    x = tl.load(out + cols, mask=cols < N, other=0.0)  # (BLOCK_N,); padded units stay 0
    for t in range(0, n_steps):
        d = tl.load(drive + t * N + rows, mask=rows < N, other=0.0)
        pre = tl.sum(w * x[None, :], axis=1) + d  # (BLOCK_N,) = W @ x + drive
        x = x + lr * (_tanh(pre) - x)
        tl.store(out + (t + 1) * N + rows, x, mask=rows < N)


@triton.jit
def _scan_tiled_kernel(
    drive_ptr,  # *f32 (R, B, T, N): W_in u_t + bias for every step
    wt_ptr,  # *f32 | *bf16 (R, N, N): W transposed (wt[r, k, i] = W[r, i, k]) for coalesced tiles
    lr_ptr,  # *f32 (R,): leak rate of each sub-reservoir
    len_ptr,  # *i32 (B,): valid steps of each sequence
    out_ptr,  # *f32 (R, B, T + 1, N): slot 0 = x0 on entry, slot t + 1 = state after step t
    B,  # sequences
    T,  # padded steps
    N,  # units per sub-reservoir
    BLOCK_B: tl.constexpr,  # sequences per program: they share every W tile read
    BLOCK_N: tl.constexpr,  # output units per tile
    BLOCK_K: tl.constexpr,  # reduction (input units) per tile
):
    r = tl.program_id(1).to(tl.int64)
    seqs = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    seq_ok = seqs < B
    lengths = tl.load(len_ptr + seqs, mask=seq_ok, other=0)
    # shorter sequences of the block keep stepping to the block's longest length; their extra
    # slots are "unspecified" and never feed a valid step
    n_steps = tl.max(lengths, axis=0)
    lr = tl.load(lr_ptr + r)
    rows = r * B + seqs.to(tl.int64)  # (BLOCK_B,)
    out_rows = out_ptr + rows * (T + 1) * N
    drive_rows = drive_ptr + rows * T * N
    wt = wt_ptr + r * N * N
    for t in range(0, n_steps):
        prev = out_rows + t * N  # (BLOCK_B,) pointers to x_t
        for i0 in range(0, N, BLOCK_N):
            units = i0 + tl.arange(0, BLOCK_N)
            mask_bi = seq_ok[:, None] & (units[None, :] < N)
            acc = tl.load(drive_rows[:, None] + t * N + units[None, :], mask=mask_bi, other=0.0)
            for k0 in range(0, N, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                mask_k = ks < N
                x_k = tl.load(prev[:, None] + ks[None, :], mask=seq_ok[:, None] & mask_k[None, :], other=0.0)
                w_mask = mask_k[:, None] & (units[None, :] < N)
                w_k = tl.load(wt + ks[:, None] * N + units[None, :], mask=w_mask, other=0.0)  # (BLOCK_K, BLOCK_N)
                # (BLOCK_B, BLOCK_K) @ (BLOCK_K, BLOCK_N); "ieee" keeps full fp32 (no TF32 rounding)
                acc += tl.dot(x_k, w_k.to(tl.float32), input_precision="ieee")
            x_i = tl.load(prev[:, None] + units[None, :], mask=mask_bi, other=0.0)
            tl.store(prev[:, None] + N + units[None, :], x_i + lr * (_tanh(acc) - x_i), mask=mask_bi)
        # slot t + 1 was written by other threads of this program; step t + 1 reads all of it
        tl.debug_barrier()


def _check_scan_args(
    drive: torch.Tensor, w: torch.Tensor, lr: torch.Tensor, x0: torch.Tensor, lengths: torch.Tensor | None
) -> torch.Tensor:
    if drive.dim() != 4:
        raise ValueError(f"drive must be (R, B, T, N), got shape {tuple(drive.shape)}")
    R, B, T, N = drive.shape
    if w.shape != (R, N, N):
        raise ValueError(f"w must be (R, N, N) = {(R, N, N)}, got {tuple(w.shape)}")
    if lr.shape != (R,):
        raise ValueError(f"lr must be (R,) = ({R},), got {tuple(lr.shape)}")
    if x0.shape != (R, B, N):
        raise ValueError(f"x0 must be (R, B, N) = {(R, B, N)}, got {tuple(x0.shape)}")
    if lengths is None:
        return torch.full((B,), T, dtype=torch.int32, device=drive.device)
    if lengths.shape != (B,):
        raise ValueError(f"lengths must be (B,) = ({B},), got {tuple(lengths.shape)}")
    if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"lengths must lie in [0, T={T}]")
    return lengths.to(device=drive.device, dtype=torch.int32)


def reservoir_scan_triton(
    drive: torch.Tensor,
    w: torch.Tensor,
    lr: torch.Tensor,
    x0: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    resident: bool | None = None,
    block_b: int = 16,
    block_n: int = 64,
    block_k: int = 64,
) -> torch.Tensor:
    """Run the scan with the Triton kernel; returns ``out`` of shape (R, B, T + 1, N), float32.

    ``resident=None`` picks the register-resident path when N <= ``RESIDENT_MAX_UNITS``; tests
    force the tiled path with small blocks. Tensors may live on the CPU under ``TRITON_INTERPRET=1``.
    """
    if not HAS_TRITON:
        raise RuntimeError("Triton is not installed on this platform; use reservoir_scan_reference")
    lengths = _check_scan_args(drive, w, lr, x0, lengths)
    if drive.dtype != torch.float32 or w.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"kernel wants float32 drive and float32/bfloat16 w, got {drive.dtype}, {w.dtype}")
    R, B, T, N = drive.shape
    out = torch.empty((R, B, T + 1, N), dtype=torch.float32, device=drive.device)
    out[:, :, 0] = x0
    if R == 0 or B == 0 or T == 0:
        return out
    drive = drive.contiguous()
    lr = lr.to(torch.float32).contiguous()
    if resident is None:
        resident = N <= RESIDENT_MAX_UNITS
    if resident:
        block = triton.next_power_of_2(N)
        _scan_resident_kernel[(B, R)](
            drive, w.contiguous(), lr, lengths, out, B, T, N, BLOCK_N=block, num_warps=4 if block <= 64 else 8
        )
    else:
        wt = w.transpose(1, 2).contiguous()
        grid = (triton.cdiv(B, block_b), R)
        _scan_tiled_kernel[grid](
            drive, wt, lr, lengths, out, B, T, N, BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4
        )
    return out


def reservoir_scan_reference(
    drive: torch.Tensor, w: torch.Tensor, lr: torch.Tensor, x0: torch.Tensor, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """PyTorch loop with the kernel's contract; computes in ``drive.dtype`` (float64 allowed).

    One batched GEMM per step over all sequences and sub-reservoirs; lengths only trim the
    all-padding tail (a valid step never depends on a later one).
    """
    lengths = _check_scan_args(drive, w, lr, x0, lengths)
    R, B, T, N = drive.shape
    out = drive.new_empty((R, B, T + 1, N))
    out[:, :, 0] = x0
    steps = int(lengths.max()) if B else 0
    wt = w.to(drive.dtype).transpose(1, 2).contiguous()  # (R, N, N): x @ W^T; contiguous: ~15% faster GEMM on CPU
    leak = lr.to(drive.dtype).view(R, 1, 1)
    x = out[:, :, 0]
    for t in range(steps):
        pre = torch.baddbmm(drive[:, :, t], x, wt)  # (R, B, N)
        pre.tanh_()
        x_next = out[:, :, t + 1]
        torch.lerp(x, pre, leak, out=x_next)  # (1 - lr) x + lr tanh(.)
        x = x_next
    return out


def reservoir_scan(
    drive: torch.Tensor,
    w: torch.Tensor,
    lr: torch.Tensor,
    x0: torch.Tensor,
    lengths: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Dispatch: CUDA float32 + Triton + N <= ``AUTO_MAX_UNITS`` -> kernel, else the reference."""
    if backend == "auto":
        use_kernel = HAS_TRITON and drive.is_cuda and drive.dtype == torch.float32 and drive.shape[-1] <= AUTO_MAX_UNITS
        backend = "triton" if use_kernel else "torch"
    if backend == "triton":
        return reservoir_scan_triton(drive, w, lr, x0, lengths)
    if backend == "torch":
        return reservoir_scan_reference(drive, w, lr, x0, lengths)
    raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
