"""The Triton reservoir scan against its PyTorch reference (interpreted on CPU-only machines)."""

from __future__ import annotations

import pytest
import torch

from aphrodite.kernels import reservoir_step as _module
from tests.kernels.conftest import interpreted

rs = interpreted(_module)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _problem(R: int, B: int, T: int, N: int, w_dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    drive = torch.randn(R, B, T, N, generator=g) * 0.5  # (R, B, T, N)
    w = (torch.randn(R, N, N, generator=g) * (1.1 / N**0.5)).to(w_dtype)  # sr ~ 1.1: not trivially contracting
    lr = torch.linspace(0.3, 1.0, R)
    x0 = torch.randn(R, B, N, generator=g) * 0.3
    return [t.to(DEVICE) for t in (drive, w, lr, x0)]


def _float64_scan(drive, w, lr, x0, lengths) -> torch.Tensor:
    """An independent reference: the recurrence written out step by step in float64 with numpy, one sequence
    at a time (it shares no code with the module's torch loop). Slots past a sequence's length stay NaN."""
    import numpy as np

    d, wm = drive.double().cpu().numpy(), w.double().cpu().numpy()
    leak, x_init = lr.double().cpu().numpy(), x0.double().cpu().numpy()
    R, B, T, N = d.shape
    out = np.full((R, B, T + 1, N), np.nan)
    for r in range(R):
        for b in range(B):
            x = x_init[r, b]
            out[r, b, 0] = x
            for t in range(int(lengths[b])):
                x = (1.0 - leak[r]) * x + leak[r] * np.tanh(wm[r] @ x + d[r, b, t])
                out[r, b, t + 1] = x
    return torch.from_numpy(out)


def _assert_valid_slots_close(out: torch.Tensor, ref: torch.Tensor, lengths: torch.Tensor, atol: float) -> None:
    # slots 0..lengths[b] are specified; later ones are not part of the contract
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[:, b, : n + 1].cpu().double(), ref[:, b, : n + 1].cpu().double(),
                                   atol=atol, rtol=0)


@pytest.mark.parametrize("w_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("N", [16, 24])  # 24: masked tail of a 32-wide register tile
def test_resident_path_matches_reference_on_a_ragged_tree_level(w_dtype: torch.dtype, N: int) -> None:
    drive, w, lr, x0 = _problem(R=3, B=4, T=10, N=N, w_dtype=w_dtype)
    lengths = torch.tensor([10, 0, 3, 7], device=DEVICE)
    out = rs.reservoir_scan_triton(drive, w, lr, x0, lengths, resident=True)
    ref = rs.reservoir_scan_reference(drive, w, lr, x0, lengths)
    assert out.dtype == torch.float32 and out.shape == (3, 4, 11, N)
    _assert_valid_slots_close(out, ref, lengths, atol=1e-5)


@pytest.mark.parametrize("path", ["resident", "tiled"])
def test_both_paths_match_an_independent_float64_scan(path: str) -> None:
    drive, w, lr, x0 = _problem(R=2, B=5, T=7, N=20, w_dtype=torch.float32, seed=4)
    lengths = torch.tensor([7, 0, 2, 5, 6])
    kw = {"resident": True} if path == "resident" else {"resident": False, "block_b": 4, "block_n": 8, "block_k": 8}
    out = rs.reservoir_scan_triton(drive, w, lr, x0, lengths.to(DEVICE), **kw)
    _assert_valid_slots_close(out, _float64_scan(drive, w, lr, x0, lengths), lengths, atol=1e-5)


def test_resident_path_near_its_largest_size() -> None:
    # N = 120 of RESIDENT_MAX_UNITS = 128: the largest register tile (BLOCK_N 128, 8 warps), tail masked
    N = rs.RESIDENT_MAX_UNITS - 8
    drive, w, lr, x0 = _problem(R=1, B=2, T=4, N=N, w_dtype=torch.float32, seed=5)
    lengths = torch.tensor([4, 3])
    out = rs.reservoir_scan_triton(drive, w, lr, x0, lengths.to(DEVICE))  # resident=None: picks the resident path
    _assert_valid_slots_close(out, _float64_scan(drive, w, lr, x0, lengths), lengths, atol=2e-5)


def test_tiled_path_with_the_shipped_default_tile_sizes() -> None:
    # the wrapper's defaults (block_b 16, block_n 64, block_k 64) on N = 136 > RESIDENT_MAX_UNITS: 3 tiles
    # each way (the last partial) and B = 17 over two 16-sequence blocks
    N = rs.RESIDENT_MAX_UNITS + 8
    drive, w, lr, x0 = _problem(R=1, B=17, T=3, N=N, w_dtype=torch.float32, seed=6)
    lengths = torch.randint(0, 4, (17,), generator=torch.Generator().manual_seed(7))
    out = rs.reservoir_scan_triton(drive, w, lr, x0, lengths.to(DEVICE))  # resident=None: tiled here
    _assert_valid_slots_close(out, _float64_scan(drive, w, lr, x0, lengths), lengths, atol=2e-5)


@pytest.mark.parametrize("w_dtype", [torch.float32, torch.bfloat16])
def test_tiled_path_for_reservoirs_larger_than_one_block(w_dtype: torch.dtype) -> None:
    # N = 40 over 16-wide tiles (3 tiles, the last one partial); B = 19 over 16-sequence blocks
    drive, w, lr, x0 = _problem(R=2, B=19, T=6, N=40, w_dtype=w_dtype, seed=1)
    lengths = torch.randint(0, 7, (19,), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    out = rs.reservoir_scan_triton(drive, w, lr, x0, lengths, resident=False, block_b=16, block_n=16, block_k=16)
    ref = rs.reservoir_scan_reference(drive, w, lr, x0, lengths)
    _assert_valid_slots_close(out, ref, lengths, atol=1e-5)


def test_bfloat16_weights_are_upcast_not_the_state() -> None:
    # same bf16-rounded W in fp32 storage gives the same states: only the weights are rounded
    drive, w, lr, x0 = _problem(R=1, B=2, T=8, N=16, w_dtype=torch.bfloat16)
    out_bf16 = rs.reservoir_scan_triton(drive, w, lr, x0)
    out_fp32 = rs.reservoir_scan_triton(drive, w.float(), lr, x0)
    torch.testing.assert_close(out_bf16, out_fp32, atol=1e-6, rtol=0)


def test_auto_dispatch_and_forced_backends_agree_with_an_independent_float64_scan() -> None:
    drive, w, lr, x0 = _problem(R=1, B=3, T=5, N=8, w_dtype=torch.float32)
    full = torch.full((3,), 5)
    ref = _float64_scan(drive, w, lr, x0, full)
    for backend in ("auto", "triton", "torch"):  # auto: the torch loop on CPU, the kernel on CUDA
        out = rs.reservoir_scan(drive, w, lr, x0, backend=backend)
        torch.testing.assert_close(out.cpu().double(), ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="backend"):
        rs.reservoir_scan(drive, w, lr, x0, backend="cudnn")


def test_wrapper_rejects_bad_shapes_and_dtypes() -> None:
    drive, w, lr, x0 = _problem(R=2, B=3, T=5, N=8, w_dtype=torch.float32)
    with pytest.raises(ValueError, match=r"w must be \(R, N, N\)"):
        rs.reservoir_scan_triton(drive, w[:1], lr, x0)
    with pytest.raises(ValueError, match="lengths"):
        rs.reservoir_scan_triton(drive, w, lr, x0, torch.tensor([1, 2, 6], device=DEVICE))
    with pytest.raises(TypeError, match="float32"):
        rs.reservoir_scan_triton(drive.double(), w, lr, x0)


def test_deep_tree_levels_through_the_kernel_match_the_torch_path() -> None:
    from aphrodite.reservoir import DeepTreeESN

    u = [torch.randn(n, 3, generator=torch.Generator().manual_seed(n)) for n in (9, 4, 7)]
    kw = dict(units=12, depth=3, branching=2, lr=0.6, sr=0.9, rc_connectivity=0.5, input_to_children=True, seed=3)
    kw["device"] = DEVICE
    kernel_states = DeepTreeESN(backend="triton", **kw).run(u)
    torch_states = DeepTreeESN(backend="torch", **kw).run(u)
    for a, b in zip(kernel_states, torch_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
