"""Free cores and thread counts shared by the engine and the reservoir (behaviour only; timing is the
busy-host benchmark's job)."""

from __future__ import annotations

import threading

import pytest
import torch

from aphrodite.common import cores

STAT_BEFORE = """cpu  200 0 100 1000 0 0 0 0 0 0
cpu0 100 0 50 500 0 0 0 0 0 0
cpu1 100 0 50 500 0 0 0 0 0 0
intr 12345
"""
# over the interval cpu0 was busy the whole time (a neighbour's busy loop), cpu1 idle the whole time
STAT_AFTER = """cpu  300 0 100 1100 0 0 0 0 0 0
cpu0 200 0 50 500 0 0 0 0 0 0
cpu1 100 0 50 600 0 0 0 0 0 0
intr 12399
"""


def test_busy_fraction_counts_only_allowed_cpus() -> None:
    assert cores.busy_fraction(STAT_BEFORE, STAT_AFTER, [0, 1]) == pytest.approx(1.0)
    assert cores.busy_fraction(STAT_BEFORE, STAT_AFTER, [0]) == pytest.approx(1.0)
    assert cores.busy_fraction(STAT_BEFORE, STAT_AFTER, [1]) == pytest.approx(0.0)
    assert cores.busy_fraction(STAT_BEFORE, STAT_BEFORE, [0, 1]) == 0.0  # no time passed: nothing busy


def test_thread_choice_follows_free_cores() -> None:
    assert cores.choose_num_threads(None, allowed=2, free=2.0) == 2  # quiet host: every core
    assert cores.choose_num_threads(None, allowed=2, free=1.0) == 1  # one busy neighbour per other core
    assert cores.choose_num_threads(None, allowed=2, free=0.0) == 1  # never zero
    assert cores.choose_num_threads(None, allowed=8, free=5.6) == 6
    assert cores.choose_num_threads(None, allowed=4, free=9.0) == 4  # never more than allowed
    assert cores.choose_num_threads(3, allowed=2, free=0.0) == 3  # an explicit request wins


def test_free_cores_is_within_the_affinity_mask() -> None:
    free = cores.free_cores(sample_s=0.05)
    assert 0.0 <= free <= len(cores.allowed_cpus())


class Host:
    """A fake /proc/stat, wall clock and process CPU clock that a test moves forward."""

    def __init__(self) -> None:
        self.now, self.cpu_s, self.jiffies = 100.0, 5.0, {0: [0, 0], 1: [0, 0]}  # cpu -> [busy, idle]
        self.running = 1  # tasks running now (/proc/loadavg), this one included

    def advance(self, seconds: float, busy: dict[int, float], own_cores: float) -> None:
        """``seconds`` pass; CPU i is busy ``busy[i]`` of the time, ``own_cores`` of it this process's."""
        self.now += seconds
        self.cpu_s += own_cores * seconds
        for cpu, share in busy.items():
            self.jiffies[cpu][0] += round(100 * seconds * share)
            self.jiffies[cpu][1] += round(100 * seconds * (1 - share))

    def stat(self) -> str:
        return "".join(f"cpu{c} {b} 0 0 {i} 0 0 0 0\n" for c, (b, i) in self.jiffies.items())

    def meter(self) -> cores.FreeCoreMeter:
        return cores.FreeCoreMeter(read_stat=self.stat, read_loadavg=lambda: f"0.5 0.4 0.3 {self.running}/300 42\n",
                                   clock=lambda: self.now, cpu_clock=lambda: self.cpu_s, cpus=[0, 1])


def test_the_meter_counts_other_processes_only_and_does_not_resample_within_its_interval() -> None:
    host = Host()
    meter = host.meter()
    assert meter() == pytest.approx(2.0)  # first call: only this task runs now
    host.advance(1.0, {0: 1.0, 1: 1.0}, own_cores=2.0)  # this process used both cores itself
    assert meter() == pytest.approx(2.0)
    host.advance(1.0, {0: 1.0, 1: 1.0}, own_cores=1.0)  # a neighbour took one of them
    assert meter() == pytest.approx(1.0)
    host.advance(0.01, {0: 1.0, 1: 1.0}, own_cores=0.0)  # too soon after the last reading: the last estimate
    assert meter() == pytest.approx(1.0)
    host.advance(20.0, {0: 0.0, 1: 0.0}, own_cores=0.0)  # a stale reading: count the tasks running now instead
    host.running = 2
    assert meter() == pytest.approx(1.0)
    host.advance(1.0, {0: 1.0, 1: 0.0}, own_cores=0.0)  # and measure from there on
    assert meter() == pytest.approx(1.0)
    host.advance(1.0, {0: 0.0, 1: 0.0}, own_cores=0.0)
    assert meter() == pytest.approx(2.0)


def test_the_meter_on_this_host_stays_within_the_affinity_mask() -> None:
    meter = cores.FreeCoreMeter(min_interval_s=0.0)
    assert 0.0 <= meter() <= len(cores.allowed_cpus())
    assert 0.0 <= meter() <= len(cores.allowed_cpus())


def test_a_scoped_thread_count_is_restored_and_leaves_other_threads_alone() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    inside, done = threading.Event(), threading.Event()

    def other() -> None:  # a thread already running torch (its count is fixed at its first torch call)
        torch.set_num_threads(torch.get_num_threads())
        inside.wait(10)
        seen.append(torch.get_num_threads())
        done.set()

    t = threading.Thread(target=other)
    t.start()
    try:
        with cores.intra_op_threads(1):
            assert torch.get_num_threads() == 1
            inside.set()
            assert done.wait(10)
    finally:
        inside.set()
        t.join(10)
    assert torch.get_num_threads() == before and seen == [before]
