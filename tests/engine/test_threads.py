"""The engine's thread choice and wait policy (behaviour only; timing is the busy-host benchmark's job)."""

from __future__ import annotations

import pytest

from aphrodite.engine import threads
from aphrodite.engine.config import ModelLoadConfig

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
    assert threads.busy_fraction(STAT_BEFORE, STAT_AFTER, [0, 1]) == pytest.approx(1.0)
    assert threads.busy_fraction(STAT_BEFORE, STAT_AFTER, [0]) == pytest.approx(1.0)
    assert threads.busy_fraction(STAT_BEFORE, STAT_AFTER, [1]) == pytest.approx(0.0)
    assert threads.busy_fraction(STAT_BEFORE, STAT_BEFORE, [0, 1]) == 0.0  # no time passed: nothing busy


def test_thread_choice_follows_free_cores() -> None:
    assert threads.choose_num_threads(None, allowed=2, free=2.0) == 2  # quiet host: every core
    assert threads.choose_num_threads(None, allowed=2, free=1.0) == 1  # one busy neighbour per other core
    assert threads.choose_num_threads(None, allowed=2, free=0.0) == 1  # never zero
    assert threads.choose_num_threads(None, allowed=8, free=5.6) == 6
    assert threads.choose_num_threads(None, allowed=4, free=9.0) == 4  # never more than allowed
    assert threads.choose_num_threads(3, allowed=2, free=0.0) == 3  # an explicit request wins


def test_free_cores_is_within_the_affinity_mask() -> None:
    free = threads.free_cores(sample_s=0.05)
    assert 0.0 <= free <= len(threads.allowed_cpus())


def test_passive_wait_is_a_default_not_an_override() -> None:
    env: dict[str, str] = {}
    assert threads.prefer_passive_wait(env) == "PASSIVE" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.prefer_passive_wait(env) == "ACTIVE"


def test_num_threads_flag_is_validated() -> None:
    assert ModelLoadConfig(num_threads=3).num_threads == 3
    with pytest.raises(ValueError, match="num_threads"):
        ModelLoadConfig(num_threads=0)


def test_num_threads_flag_is_generated(monkeypatch: pytest.MonkeyPatch) -> None:
    from aphrodite.endpoints.cli_args import configs_from_args, parse_args

    load = configs_from_args(parse_args(["--num-threads", "1"]))[1]
    assert load.num_threads == 1
    assert configs_from_args(parse_args([]))[1].num_threads is None
