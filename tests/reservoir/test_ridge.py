"""Ridge readout: running sums, incremental fits, ragged data, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aphrodite.reservoir import Ridge


def _data(n: int, f: int = 6, o: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=g, dtype=torch.float64)
    w = torch.randn(f, o, generator=g, dtype=torch.float64)
    return x, x @ w + 2.0 + 0.01 * torch.randn(n, o, generator=g, dtype=torch.float64), w


def test_fit_recovers_weights_and_unpenalised_bias() -> None:
    x, y, w = _data(2000)
    readout = Ridge(ridge=1e-6).fit(x, y)
    torch.testing.assert_close(readout.Wout, w, atol=2e-3, rtol=0)
    torch.testing.assert_close(readout.bias, torch.full((2,), 2.0, dtype=torch.float64), atol=2e-3, rtol=0)


def test_partial_fit_in_chunks_equals_one_fit() -> None:
    x, y, _ = _data(900)
    whole = Ridge(ridge=1e-2).fit(x, y)
    chunked = Ridge(ridge=1e-2)
    for i in range(0, 900, 250):
        chunked.partial_fit(x[i : i + 250], y[i : i + 250])
    torch.testing.assert_close(chunked.run(x), whole.run(x), atol=1e-10, rtol=0)  # run solves on demand


def test_padding_and_warmup_are_left_out_of_the_sums() -> None:
    x, y, _ = _data(30)
    padded_x = torch.zeros(2, 20, 6, dtype=torch.float64)
    padded_y = torch.full((2, 20, 2), 1e6, dtype=torch.float64)  # garbage that must not count
    padded_x[0, :18], padded_y[0, :18] = x[:18], y[:18]
    padded_x[1, :12], padded_y[1, :12] = x[18:], y[18:]
    ours = Ridge(ridge=1e-3).fit(padded_x, padded_y, lengths=[18, 12], warmup=3)
    expected = Ridge(ridge=1e-3).fit(torch.cat([x[3:18], x[21:]]), torch.cat([y[3:18], y[21:]]))
    torch.testing.assert_close(ours.Wout, expected.Wout)
    as_list = Ridge(ridge=1e-3).fit([x[:18], x[18:]], [y[:18], y[18:]], warmup=3)
    torch.testing.assert_close(as_list.Wout, expected.Wout)


def test_run_keeps_the_callers_form_and_dtype() -> None:
    x, y, _ = _data(100)
    readout = Ridge().fit(x, y)
    assert readout.run(x.float()).dtype == torch.float32
    assert [p.shape for p in readout.run([x[:10], x[10:13]])] == [(10, 2), (3, 2)]


def test_reset_and_errors() -> None:
    readout = Ridge()
    with pytest.raises(RuntimeError, match="no samples"):
        readout.run(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="ridge"):
        Ridge(ridge=-1.0)


def test_save_and_load_keep_sums_so_learning_can_resume(tmp_path: Path) -> None:
    x, y, _ = _data(400)
    readout = Ridge(ridge=1e-3).partial_fit(x[:200], y[:200])
    readout.save(tmp_path / "ridge.safetensors")
    resumed = Ridge.load(tmp_path / "ridge.safetensors").partial_fit(x[200:], y[200:])
    torch.testing.assert_close(resumed.run(x), Ridge(ridge=1e-3).fit(x, y).run(x))
