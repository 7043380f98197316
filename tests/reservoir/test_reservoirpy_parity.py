"""Same matrices as reservoirpy 0.4 -> same states, same readout, same published memory capacity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

rpy = pytest.importorskip("reservoirpy", minversion="0.4")
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402
from reservoirpy.nodes import Reservoir as RpyReservoir  # noqa: E402
from reservoirpy.nodes import Ridge as RpyRidge  # noqa: E402

from aphrodite.reservoir import EchoStatePropertyWarning, Reservoir, Ridge  # noqa: E402


def _imported(rp: RpyReservoir, lr: float, dtype: str) -> Reservoir:
    return Reservoir.from_matrices(rp.W, rp.Win, rp.bias, lr=lr, dtype=dtype)


@pytest.mark.filterwarnings("ignore::aphrodite.reservoir.EchoStatePropertyWarning")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sr, lr", [(1.25, 0.3), (0.9, 1.0)])
def test_states_match_reservoirpy_within_1e5_over_2000_steps(dtype: str, sr: float, lr: float) -> None:
    u = np.random.default_rng(0).uniform(-1, 1, size=(2000, 2))
    rp = RpyReservoir(100, sr=sr, lr=lr, input_scaling=0.5, seed=11)
    expected = rp.run(u)  # (2000, 100) float64
    ours = _imported(rp, lr, dtype).run(u)
    assert np.abs(ours.double().numpy() - expected).max() <= 1e-5


def test_imported_matrices_keep_the_echo_state_check() -> None:
    rp = RpyReservoir(100, sr=1.25, lr=0.3, seed=1)
    rp.initialize(np.zeros((1, 1)))
    with pytest.warns(EchoStatePropertyWarning):
        _imported(rp, 0.3, "float64")


def test_ridge_matches_reservoirpy_ridge_on_the_same_states() -> None:
    rng = np.random.default_rng(3)
    x, w_true = rng.normal(size=(500, 20)), rng.normal(size=(20, 2))
    y = x @ w_true + 0.1 * rng.normal(size=(500, 2)) + 3.0
    theirs = RpyRidge(ridge=1e-3).fit(x, y, warmup=10)
    ours = Ridge(ridge=1e-3).fit(torch.from_numpy(x), torch.from_numpy(y), warmup=10)
    np.testing.assert_allclose(ours.Wout.numpy(), theirs.Wout, atol=1e-10)
    np.testing.assert_allclose(ours.bias.numpy(), np.ravel(theirs.bias), atol=1e-10)


@pytest.mark.filterwarnings("ignore::aphrodite.reservoir.EchoStatePropertyWarning")
def test_memory_capacity_docstring_anchor_is_18_78() -> None:
    # reservoirpy.observables.memory_capacity docstring: Reservoir(100, sr=1, seed=1) >> Ridge(ridge=1e-4),
    # k_max=50, seed=1 -> "Memory capacity of the model: 18.78". Same protocol, its matrices.
    rp = RpyReservoir(100, sr=1, seed=1)
    rp.initialize(np.zeros((1, 1)))  # input_dim 1, as memory_capacity's deepcopy initialises it
    k = 50
    series = np.random.default_rng(1).uniform(-0.8, 0.8, size=(10 * k, 1))
    window = sliding_window_view(series[:, 0], k + 1)[:, ::-1]  # column j = u(t - j)
    test_len = round(series.shape[0] * 0.2)
    x_train, x_test = window[:-test_len, :1].copy(), window[-test_len:, :1].copy()
    y_train, y_test = window[:-test_len, 1:].copy(), window[-test_len:, 1:].copy()
    for dtype in ("float64", "float32"):
        res = _imported(rp, 1.0, dtype)
        readout = Ridge(ridge=1e-4).fit(res.run(x_train), y_train, warmup=k)
        pred = readout.run(res.run(x_test)).double().numpy()  # continues from the training state
        mc = sum(np.corrcoef(p, t)[0, 1] ** 2 for p, t in zip(pred.T, y_test.T))
        assert round(mc, 2) == 18.78, (dtype, mc)
