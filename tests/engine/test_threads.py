"""The engine's wait policy and --num-threads flag (the free-core logic: tests/common/test_cores.py)."""

from __future__ import annotations

import pytest

from aphrodite.engine import threads
from aphrodite.engine.config import ModelLoadConfig

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
