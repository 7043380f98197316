"""RLS readout: agrees with Ridge, block updates equal one-sample updates, stays stable for long."""

from __future__ import annotations

from pathlib import Path

import torch

from aphrodite.reservoir import RLS, Reservoir, Ridge


def _reservoir_task(n: int, units: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(n + 100, 1, generator=g, dtype=torch.float64) - 0.5
    states = Reservoir(units, sr=0.9, rc_connectivity=0.3, input_connectivity=1.0, seed=0, dtype="float64").run(u)
    target = torch.roll(u, 3, 0) ** 2  # a delayed nonlinear function of the input
    return states[100:], target[100:]  # (n, units), (n, 1), after a washout


def test_forgetting_one_converges_to_the_ridge_solution_after_10n_samples() -> None:
    states, target = _reservoir_task(500)  # 10 x 50 units
    ridge = Ridge(ridge=1e-4).fit(states, target)
    rls = RLS(alpha=1e-4, forgetting=1.0).fit(states, target)  # P0 = I / 1e-4: same penalty
    rel = (rls.Wout - ridge.Wout).norm() / ridge.Wout.norm()
    assert rel <= 1e-3, rel
    assert (rls.bias - ridge.bias).abs().max() <= 1e-3


def test_block_updates_equal_one_sample_updates() -> None:
    states, target = _reservoir_task(300, units=20)
    # no trace bound here: it acts per update, so it would act at different times
    one = RLS(alpha=1e-2, forgetting=0.99, block=1, max_trace=float("inf"))
    blocked = RLS(alpha=1e-2, forgetting=0.99, block=32, max_trace=float("inf"))
    one.partial_fit(states, target)
    blocked.partial_fit(states, target)
    torch.testing.assert_close(blocked.W, one.W, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(blocked.P, one.P, atol=1e-8, rtol=1e-6)


def test_1e5_updates_with_forgetting_stay_finite_positive_definite_and_track_a_change() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100_000, 8, generator=g, dtype=torch.float64)
    x[:, 5] = 0.0  # never excited: without the trace cap P would grow as 0.999^-n there
    x[:, 6] = x[:, 7]  # collinear pair: one more unexcited direction
    # (without the bound, P reaches 1e16 and turns indefinite within 20,000 updates)
    w_a, w_b = torch.randn(8, 1, generator=g, dtype=torch.float64), torch.randn(8, 1, generator=g, dtype=torch.float64)
    noise = 0.01 * torch.randn(100_000, 1, generator=g, dtype=torch.float64)
    y = torch.cat([x[:50_000] @ w_a, x[50_000:] @ w_b]) + noise
    rls = RLS(alpha=1e-3, forgetting=0.999)
    preds = []
    for i in range(0, 100_000, 10_000):
        preds.append(rls.partial_fit(x[i : i + 10_000], y[i : i + 10_000]))
        assert torch.isfinite(rls.P).all() and torch.isfinite(rls.W).all()
        torch.testing.assert_close(rls.P, rls.P.T, atol=0, rtol=0)
        assert torch.linalg.eigvalsh(rls.P).min() > 0
        assert rls.P.diagonal().sum() <= rls.trace_bound * (1 + 1e-12)
    assert rls.samples == 100_000
    late_error = (torch.cat(preds)[-5_000:] - y[-5_000:]).abs().mean()
    assert late_error < 0.02  # the weights followed the switch from w_a to w_b (noise: 0.008)


def test_partial_fit_returns_predictions_made_before_learning() -> None:
    states, target = _reservoir_task(64, units=10)
    rls = RLS(alpha=1.0, block=64)
    first = rls.partial_fit(states, target)
    assert (first == 0).all()  # zero weights before the first block
    assert rls.run(states).shape == target.shape


def test_save_and_load_resume_learning(tmp_path: Path) -> None:
    states, target = _reservoir_task(200, units=10)
    rls = RLS(alpha=1e-2, forgetting=0.995)
    rls.partial_fit(states[:100], target[:100])
    rls.save(tmp_path / "rls.safetensors")
    resumed = RLS.load(tmp_path / "rls.safetensors")
    resumed.partial_fit(states[100:], target[100:])
    rls.partial_fit(states[100:], target[100:])
    torch.testing.assert_close(resumed.W, rls.W)
    assert resumed.samples == 200
