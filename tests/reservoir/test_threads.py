"""The reservoir's intra-op thread choice (behaviour only; timing is benchmark_reservoir.py's and
benchmark_busy_host.py's job)."""

from __future__ import annotations

import torch

from aphrodite.common import cores
from aphrodite.reservoir import DeepTreeESN, Reservoir
from aphrodite.reservoir.threads import MIN_PARALLEL_FLOPS, choose_threads, step_flops


class Meter:
    """A FreeCoreMeter stand-in that reports ``free`` cores and counts its reads."""

    def __init__(self, free: float) -> None:
        self.free, self.reads = free, 0

    def __call__(self) -> float:
        self.reads += 1
        return self.free


def test_small_steps_run_on_one_thread_without_reading_the_host() -> None:
    meter = Meter(free=8.0)
    assert choose_threads(MIN_PARALLEL_FLOPS / 2, ceiling=8, meter=meter) == 1 and meter.reads == 0


def test_large_steps_take_the_free_cores_up_to_the_callers_thread_count() -> None:
    big = 4 * MIN_PARALLEL_FLOPS
    assert choose_threads(big, ceiling=2, meter=Meter(2.0)) == 2  # quiet 2-core host
    assert choose_threads(big, ceiling=2, meter=Meter(1.0)) == 1  # one busy neighbour
    assert choose_threads(big, ceiling=2, meter=Meter(0.2)) == 1  # never zero
    assert choose_threads(big, ceiling=1, meter=Meter(8.0)) == 1  # a caller on one thread (the server's predictor)
    assert choose_threads(big, ceiling=4, meter=Meter(8.0)) == 4


def test_step_work_counts_every_sub_reservoir() -> None:
    assert step_flops([(1, 256)], 64) == 2 * 64 * 256 * 256
    assert step_flops([(1, 64), (2, 64)], 10) == 3 * 2 * 10 * 64 * 64


def test_a_reservoir_chooses_per_run_and_an_explicit_count_wins(monkeypatch) -> None:
    res = Reservoir(256, sr=0.9, seed=0, input_dim=1)
    assert res.run_threads(64) == 1  # 8.4 MFLOP per step: below the threshold
    big = int(MIN_PARALLEL_FLOPS / (2 * 256 * 256)) + 1
    res._meter = Meter(free=1.0)
    assert res.run_threads(big) == 1  # large, but one core free
    res._meter = Meter(free=64.0)
    assert res.run_threads(big) == min(64, torch.get_num_threads())
    assert Reservoir(256, seed=0, input_dim=1, threads=3).run_threads(64) == 3
    tree = DeepTreeESN(units=32, depth=2, branching=2, seed=0, input_dim=4)
    assert tree.run_threads(8) == 1


def test_a_run_restores_the_callers_thread_count_and_states_match_at_any_count() -> None:
    before = torch.get_num_threads()
    u = torch.randn(4, 50, 1, generator=torch.Generator().manual_seed(0))
    chosen = Reservoir(64, sr=0.9, seed=0).run(u)
    with cores.intra_op_threads(1):
        fixed = Reservoir(64, sr=0.9, seed=0, threads=max(2, before)).run(u)
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    torch.testing.assert_close(chosen, fixed)
