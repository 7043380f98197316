"""Reservoir: initialisation, the echo state property check, batching, state and checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from aphrodite.reservoir import EchoStatePropertyWarning, Reservoir, spectral_radius


def test_weights_follow_units_sr_and_connectivity() -> None:
    res = Reservoir(200, sr=0.8, rc_connectivity=0.1, input_connectivity=0.5, input_scaling=0.3, seed=0, input_dim=4)
    assert res.W.shape == (200, 200) and res.W_in.shape == (200, 4)
    assert spectral_radius(res.W) == pytest.approx(0.8, rel=1e-5)
    assert (res.W != 0).sum() == 4000  # exactly 10% of 200 x 200
    nonzero = res.W_in[res.W_in != 0]
    assert torch.allclose(nonzero.abs(), torch.tensor(0.3)) and 0.4 < nonzero.numel() / 800 < 0.6
    dense = Reservoir(50, rc_connectivity=1.0, seed=0, input_dim=1)
    assert (dense.W != 0).all()


def test_same_seed_same_reservoir_other_seed_other_reservoir() -> None:
    a, b, c = (Reservoir(30, seed=s, input_dim=2) for s in (7, 7, 8))
    assert torch.equal(a.W, b.W) and torch.equal(a.W_in, b.W_in)
    assert not torch.equal(a.W, c.W)


def test_echo_state_property_warning_only_when_effective_radius_reaches_one() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", EchoStatePropertyWarning)
        Reservoir(100, sr=0.9, lr=1.0, seed=0, input_dim=1)  # rho = 0.9
        Reservoir(100, sr=0.95, lr=0.3, seed=0, input_dim=1)  # rho <= 0.7 + 0.3 * 0.95
        # sr = 1.5 but the only eigenvalue is -1.5: rho = |0.5 + 0.5 * -1.5| = 0.25
        Reservoir.from_matrices(-1.5 * torch.eye(4), torch.ones(4, 1), lr=0.5)
    with pytest.warns(EchoStatePropertyWarning, match="effective spectral radius"):
        Reservoir(100, sr=1.5, lr=1.0, seed=0, input_dim=1)
    with pytest.warns(EchoStatePropertyWarning, match="1.075"):  # |0.7 + 0.3 * 1.25|
        Reservoir.from_matrices(1.25 * torch.eye(4), torch.ones(4, 1), lr=0.3)


def test_batched_run_equals_one_sequence_at_a_time() -> None:
    u = torch.randn(5, 40, 3, dtype=torch.float64)
    res = Reservoir(64, lr=0.5, sr=0.9, seed=1, dtype="float64")
    batched = res.run(u)
    for b in range(5):
        res.reset()
        torch.testing.assert_close(res.run(u[b]), batched[b], atol=1e-12, rtol=0)


def test_ragged_list_gives_each_sequence_its_own_length_and_final_state() -> None:
    seqs = [torch.randn(n, 2) for n in (13, 1, 7)]
    res = Reservoir(32, lr=0.7, sr=0.9, seed=2)
    out = res.run(seqs)
    assert [o.shape for o in out] == [(13, 32), (1, 32), (7, 32)]
    for i, s in enumerate(seqs):
        alone = Reservoir(32, lr=0.7, sr=0.9, seed=2).run(s)
        torch.testing.assert_close(out[i], alone, atol=1e-6, rtol=0)
        torch.testing.assert_close(res.state[i], alone[-1], atol=1e-6, rtol=0)


def test_padded_batch_with_lengths_zeroes_the_padding() -> None:
    u = torch.randn(2, 10, 1)
    states = Reservoir(16, seed=0, rc_connectivity=0.5).run(u, lengths=[10, 4])
    assert (states[1, 4:] == 0).all() and (states[1, :4] != 0).any()


def test_run_continues_from_the_stored_state_until_reset() -> None:
    u = torch.randn(3, 50, 1, dtype=torch.float64)
    res = Reservoir(40, lr=0.3, sr=0.9, seed=3, dtype="float64")
    whole = res.run(u)
    res.reset()
    halves = torch.cat([res.run(u[:, :20]), res.run(u[:, 20:])], dim=1)
    torch.testing.assert_close(halves, whole, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="reset"):
        res.run(torch.randn(2, 5, 1, dtype=torch.float64))  # 3 stored states, 2 sequences
    res.reset()
    first = res.run(u[:, :20], x0=torch.zeros(40, dtype=torch.float64))
    torch.testing.assert_close(first, whole[:, :20], atol=1e-12, rtol=0)


def test_bfloat16_weights_stay_close_to_float32() -> None:
    u = torch.randn(4, 100, 2)
    fp32 = Reservoir(64, lr=0.5, sr=0.9, seed=4).run(u)
    bf16 = Reservoir(64, lr=0.5, sr=0.9, seed=4, weight_dtype="bfloat16").run(u)
    assert fp32.dtype == bf16.dtype == torch.float32
    assert (fp32 - bf16).abs().max() < 0.05


def test_wrong_input_size_is_a_clear_error() -> None:
    res = Reservoir(8, seed=0, rc_connectivity=0.5, input_dim=3)
    with pytest.raises(ValueError, match="expects 3"):
        res.run(torch.randn(10, 2))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    res = Reservoir(24, lr=0.4, sr=0.95, bias=0.2, seed=5, rc_connectivity=0.3)
    u = torch.randn(2, 30, 3)
    res.run(u)
    res.save(tmp_path / "res.safetensors")
    loaded = Reservoir.load(tmp_path / "res.safetensors")
    assert loaded.config() == res.config()
    torch.testing.assert_close(loaded.state, res.state)
    torch.testing.assert_close(loaded.run(u), res.run(u))
