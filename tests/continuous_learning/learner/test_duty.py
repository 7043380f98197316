"""The worker's duty cycle: pauses after each step in proportion to it, only while serving is busy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from aphrodite.continuous_learning.learner.duty import DutyCycle


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def run_steps(duty: float, busy: list[bool], step_s: float = 0.2) -> list[float]:
    """Call the hook before each of len(busy) steps of ``step_s`` seconds; the flag is read per step."""
    clock, flag = FakeClock(), SimpleNamespace(value=False)
    hook = DutyCycle(flag, duty, clock=clock, sleep=clock.sleep)
    for b in busy:
        flag.value = b
        hook()
        clock.now += step_s  # the optimizer step
    return clock.sleeps


def test_busy_server_gets_the_rest_of_the_time() -> None:
    # duty 0.5: a 0.2 s step is followed by 0.2 s of sleep; duty 0.25: by 0.6 s (trains a quarter of the time)
    assert run_steps(0.5, [True] * 4) == pytest.approx([0.2] * 3)
    assert run_steps(0.25, [True] * 3) == pytest.approx([0.6] * 2)


def test_idle_server_or_full_duty_never_sleeps() -> None:
    assert run_steps(0.5, [False] * 5) == []
    assert run_steps(1.0, [True] * 5) == []
    # only the steps that end while the server is busy are followed by a pause
    assert run_steps(0.5, [False, True, False, True]) == pytest.approx([0.2, 0.2])


def test_sleep_is_not_counted_as_work() -> None:
    clock, flag = FakeClock(), SimpleNamespace(value=True)
    hook = DutyCycle(flag, 0.5, clock=clock, sleep=clock.sleep)
    hook()
    clock.now += 1.0
    hook()  # sleeps 1.0
    clock.now += 0.1
    hook()  # the step took 0.1 s: sleeps 0.1, not 1.1
    assert clock.sleeps == pytest.approx([1.0, 0.1]) and hook.slept == pytest.approx(1.1)


def test_duty_out_of_range_is_refused() -> None:
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="duty"):
            DutyCycle(SimpleNamespace(value=True), bad)
