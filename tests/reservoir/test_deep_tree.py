"""DeepTreeESN: tree shape, parent -> child wiring, features layout, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aphrodite.reservoir import DeepTreeESN, Reservoir


def test_tree_size_and_feature_layout() -> None:
    esn = DeepTreeESN(units=16, depth=3, branching=3, sr=0.9, rc_connectivity=0.3, seed=0)
    states = esn.run(torch.randn(2, 20, 5))
    assert esn.n_reservoirs == 1 + 3 + 9 and esn.output_dim == 13 * 16
    assert states.shape == (2, 20, 13 * 16) and esn.state.shape == (2, 13 * 16)
    assert [bank.count for bank in esn.levels] == [1, 3, 9]
    torch.testing.assert_close(esn.state, states[:, -1])


def test_depth_one_tree_is_a_reservoir() -> None:
    kw = dict(units=32, lr=0.5, sr=0.9, seed=4, dtype="float64")
    u = torch.randn(3, 25, 2, dtype=torch.float64)
    torch.testing.assert_close(DeepTreeESN(depth=1, branching=1, **kw).run(u), Reservoir(**kw).run(u))


@pytest.mark.parametrize("input_to_children", [False, True])
def test_each_child_reads_its_parent_state(input_to_children: bool) -> None:
    N, k = 10, 2
    esn = DeepTreeESN(
        units=N, depth=3, branching=k, lr=0.7, sr=0.9, rc_connectivity=0.5,
        input_to_children=input_to_children, seed=1, dtype="float64",
    )  # fmt: skip
    u = torch.randn(2, 15, 3, dtype=torch.float64)
    states = esn.run(u).view(2, 15, esn.n_reservoirs, N)  # (B, T, sub-reservoir, N), breadth-first
    for level in (1, 2):
        bank, first = esn.levels[level], sum(k**i for i in range(level))
        for j in range(bank.count):
            parent_states = states[:, :, first - k ** (level - 1) + j // k]  # parent of j on the level above
            inputs, w_in = parent_states, bank.w_p[j]
            if input_to_children:
                inputs, w_in = torch.cat([parent_states, u], -1), torch.cat([bank.w_p[j], bank.w_u[j]], -1)
            alone = Reservoir.from_matrices(bank.w[j], w_in, bank.bias[j], lr=0.7, dtype="float64").run(inputs)
            torch.testing.assert_close(states[:, :, first + j], alone, atol=1e-12, rtol=0)


def test_ragged_sequences_and_checkpoint_round_trip(tmp_path: Path) -> None:
    esn = DeepTreeESN(units=8, depth=2, branching=2, sr=0.8, rc_connectivity=0.5, bias=0.1, seed=2)
    seqs = [torch.randn(n, 4) for n in (6, 11, 2)]
    out = esn.run(seqs)
    assert [o.shape for o in out] == [(6, 24), (11, 24), (2, 24)]
    for i, s in enumerate(seqs):
        torch.testing.assert_close(esn.state[i], out[i][-1])
    esn.save(tmp_path / "tree.safetensors")
    loaded = DeepTreeESN.load(tmp_path / "tree.safetensors")
    loaded.reset()
    esn.reset()
    for a, b in zip(loaded.run(seqs), esn.run(seqs)):
        torch.testing.assert_close(a, b)
