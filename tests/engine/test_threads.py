"""The engine's wait policy and --num-threads flag (the free-core logic: tests/common/test_cores.py)."""

from __future__ import annotations

import asyncio

import pytest
import torch

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


def test_the_engine_thread_runs_at_the_engines_count_whatever_another_thread_set_last(tiny_model_dir) -> None:
    from aphrodite.engine.async_engine import AsyncEngine
    from aphrodite.engine.llm_engine import LLMEngine

    before = torch.get_num_threads()
    engine = LLMEngine(ModelLoadConfig(model=str(tiny_model_dir), num_threads=2))
    torch.set_num_threads(1)  # e.g. a learning thread's own count: a thread started now would inherit it

    async def main() -> int:
        runner = AsyncEngine(engine)
        runner.start()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(engine.call_at_safe_point(torch.get_num_threads)), 30)
        finally:
            await runner.shutdown()

    try:
        assert asyncio.run(main()) == engine.num_threads == 2
    finally:
        torch.set_num_threads(before)
