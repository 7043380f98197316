"""The reservoir's intra-op thread choice (behaviour only; timing is benchmark_reservoir.py's and
benchmark_busy_host.py's job)."""

from __future__ import annotations

import torch

from aphrodite.common import cores
from aphrodite.reservoir import DeepTreeESN, Reservoir
from aphrodite.reservoir.threads import MIN_PARALLEL_DRIVE, MIN_PARALLEL_FLOPS, RunThreads, choose_threads, step_flops


class Meter:
    """A FreeCoreMeter stand-in that reports ``free`` cores and counts its reads."""

    def __init__(self, free: float) -> None:
        self.free, self.reads = free, 0

    def __call__(self) -> float:
        self.reads += 1
        return self.free


SMALL_STEP, BIG_STEP = MIN_PARALLEL_FLOPS / 2, 4 * MIN_PARALLEL_FLOPS
SMALL_DRIVE, BIG_DRIVE = MIN_PARALLEL_DRIVE // 2, 4 * MIN_PARALLEL_DRIVE


def test_small_work_runs_on_one_thread_without_reading_the_host() -> None:
    meter = Meter(free=8.0)
    assert choose_threads(SMALL_STEP, SMALL_DRIVE, ceiling=8, free=meter) == RunThreads(1, 1) and meter.reads == 0


def test_small_steps_stay_on_one_thread_while_a_large_projection_takes_the_free_cores() -> None:
    assert choose_threads(SMALL_STEP, BIG_DRIVE, ceiling=2, free=Meter(2.0)) == RunThreads(drive=2, step=1)
    assert choose_threads(SMALL_STEP, BIG_DRIVE, ceiling=2, free=Meter(1.0)) == RunThreads(drive=1, step=1)


def test_large_steps_take_the_free_cores_up_to_the_callers_thread_count() -> None:
    assert choose_threads(BIG_STEP, BIG_DRIVE, ceiling=2, free=Meter(2.0)) == RunThreads(2, 2)  # quiet 2-core host
    assert choose_threads(BIG_STEP, BIG_DRIVE, ceiling=2, free=Meter(1.0)) == RunThreads(1, 1)  # a busy neighbour
    assert choose_threads(BIG_STEP, BIG_DRIVE, ceiling=2, free=Meter(0.2)) == RunThreads(1, 1)  # never zero
    assert choose_threads(BIG_STEP, SMALL_DRIVE, ceiling=4, free=Meter(8.0)) == RunThreads(drive=1, step=4)
    meter = Meter(8.0)  # a caller on one thread (the server's quality predictor): the host is not even read
    assert choose_threads(BIG_STEP, BIG_DRIVE, ceiling=1, free=meter) == RunThreads(1, 1) and meter.reads == 0


def test_step_work_counts_every_sub_reservoir() -> None:
    assert step_flops([(1, 256)], 64) == 2 * 64 * 256 * 256
    assert step_flops([(1, 64), (2, 64)], 10) == 3 * 2 * 10 * 64 * 64


def test_a_reservoir_chooses_per_run_and_an_explicit_count_wins() -> None:
    ceiling = torch.get_num_threads()
    res = Reservoir(256, sr=0.9, seed=0, input_dim=1)
    res._meter = Meter(free=64.0)
    assert res.run_threads(64, 10) == RunThreads(1, 1)  # 8.4 MFLOP per step, 164k projected values: all small
    assert res.run_threads(64, 1000) == RunThreads(drive=ceiling, step=1)  # 16.4M projected values
    big = int(MIN_PARALLEL_FLOPS / (2 * 256 * 256)) + 1
    assert res.run_threads(big, 1000) == RunThreads(ceiling, ceiling)
    res._meter = Meter(free=1.0)
    assert res.run_threads(big, 1000) == RunThreads(1, 1)  # large, but one core free
    assert Reservoir(256, seed=0, input_dim=1, threads=3).run_threads(64, 1000) == RunThreads(3, 3)
    tree = DeepTreeESN(units=32, depth=2, branching=2, seed=0, input_dim=4)
    assert tree.run_threads(8, 100) == RunThreads(1, 1)


def test_a_run_restores_the_callers_thread_count_and_states_match_at_any_count() -> None:
    before = torch.get_num_threads()
    u = torch.randn(4, 50, 1, generator=torch.Generator().manual_seed(0))
    chosen = Reservoir(64, sr=0.9, seed=0).run(u)
    with cores.intra_op_threads(1):
        fixed = Reservoir(64, sr=0.9, seed=0, threads=max(2, before)).run(u)
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    torch.testing.assert_close(chosen, fixed)
