"""The grouped low-rank (multi-LoRA) kernel against its PyTorch reference (interpreted on CPU-only machines)."""

from __future__ import annotations

import pytest
import torch

from aphrodite.kernels import grouped_lora as _module
from tests.kernels.conftest import interpreted

gl = interpreted(_module)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _problem(N: int, IN: int, OUT: int, K: int, R: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, IN, generator=g)
    a = torch.randn(K, R, IN, generator=g) / IN**0.5
    b = torch.randn(K, OUT, R, generator=g) / R**0.5
    y = torch.randn(N, OUT, generator=g)
    return [t.to(DEVICE, dtype) for t in (x, a, b, y)]


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("IN,OUT,R", [(32, 48, 8), (40, 70, 12)])  # 40/70/12: masked tails of every tile
def test_every_row_gets_its_own_slots_delta(dtype: torch.dtype, atol: float, IN: int, OUT: int, R: int) -> None:
    x, a, b, y = _problem(N=7, IN=IN, OUT=OUT, K=3, R=R, dtype=dtype)
    slots = torch.tensor([0, 2, -1, 1, 2, 0, -1], dtype=torch.int32, device=DEVICE)
    ours = gl.grouped_lora_triton(x, a, b, slots, y.clone(), block_k=16, block_o=32)
    ref = gl.grouped_lora_reference(x, a, b, slots, y.clone())
    torch.testing.assert_close(ours.float(), ref.float(), atol=atol, rtol=atol)
    assert torch.equal(ours[slots < 0], y[slots < 0])  # base rows untouched


def test_reference_matches_one_delta_per_row_written_out() -> None:
    x, a, b, y = _problem(N=4, IN=16, OUT=24, K=2, R=4, dtype=torch.float32, seed=1)
    slots = torch.tensor([1, -1, 0, 1], device=DEVICE)
    ref = gl.grouped_lora_reference(x, a, b, slots, y.clone())
    for n, s in enumerate(slots.tolist()):
        expected = y[n] + (b[s] @ (a[s] @ x[n]) if s >= 0 else 0)
        torch.testing.assert_close(ref[n], expected, atol=1e-5, rtol=1e-5)


def test_shapes_that_do_not_chain_are_refused() -> None:
    x, a, b, y = _problem(N=2, IN=16, OUT=24, K=2, R=4, dtype=torch.float32)
    with pytest.raises(ValueError, match="do not chain"):
        gl.grouped_lora_triton(x, a, b[:, :8], torch.zeros(2, dtype=torch.int32, device=DEVICE), y)


def test_b_may_be_a_strided_view_as_the_layers_keep_it() -> None:
    x, a, b, y = _problem(N=5, IN=24, OUT=40, K=3, R=8, dtype=torch.float32, seed=2)
    b_view = b.transpose(0, 1).contiguous().transpose(0, 1)  # (K, out, R) over (out, K, R) storage
    slots = torch.tensor([2, 0, -1, 1, 2], dtype=torch.int32, device=DEVICE)
    ours = gl.grouped_lora_triton(x, a, b_view, slots, y.clone(), block_k=16, block_o=16)
    torch.testing.assert_close(ours, gl.grouped_lora_reference(x, a, b, slots, y.clone()), atol=1e-5, rtol=1e-5)
