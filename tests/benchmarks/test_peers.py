"""The peer benchmarks' workload builder and worker launcher (no peer library needed)."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.peers import launch
from benchmarks.peers import workload as wl


def encode(text: str) -> list[int]:
    return [len(word) for word in text.split()]  # a stand-in tokenizer: one id per word


def test_mixed_workloads_share_prompts_and_lengths_and_differ_only_in_sampling() -> None:
    sampled = wl.mixed(encode, 16, seed=3, prompt_range=(8, 20), output_range=(4, 9), sampling=wl.SAMPLED)
    greedy = wl.mixed(encode, 16, seed=3, prompt_range=(8, 20), output_range=(4, 9), sampling=wl.GREEDY)
    assert [(r.prompt, r.max_tokens) for r in sampled] == [(r.prompt, r.max_tokens) for r in greedy]
    assert all(8 <= len(r.prompt) <= 20 and 4 <= r.max_tokens <= 9 for r in sampled)
    assert {r.temperature for r in sampled} == {0.8} and {r.temperature for r in greedy} == {0.0}
    assert wl.mixed(encode, 16, 4, (8, 20), (4, 9), wl.GREEDY) != greedy  # the seed matters


def test_chat_requests_share_the_system_prompt() -> None:
    def chat_ids(system: str, question: list[int]) -> list[int]:
        return [1] + encode(system) + [2] + question + [3]

    work = wl.chat(encode, 8, seed=0, question_range=(8, 16), output_range=(16, 32), chat_ids=chat_ids)
    head = chat_ids(wl.SYSTEM_PROMPT, [])[:-1]
    assert all(r.prompt[:len(head)] == head for r in work)
    assert len({tuple(r.prompt) for r in work}) > 1


def test_single_stream_rate_and_round_trip(tmp_path: Path) -> None:
    work = wl.single_stream(encode, 32, 101)
    assert [r.max_tokens for r in work["single-1"] + work["single-n"]] == [1, 101]
    assert work["single-1"][0].prompt == work["single-n"][0].prompt and len(work["single-1"][0].prompt) == 32
    assert wl.decode_rate({"single-1": 0.5, "single-n": 1.5}, 101) == 100.0
    assert wl.decode_rate({"mixed-greedy": 1.0}, 101) is None
    wl.save(work, tmp_path / "w.json")
    assert wl.load(tmp_path / "w.json") == work


def test_a_peer_without_its_environment_is_reported_not_installed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("APHRODITE_PEER_VENVS", str(tmp_path))  # no venvs there
    res = launch.run_peer("vllm", tmp_path / "w.json", tmp_path, threads=1, batch=4)
    assert res.status == "not installed"
    res = launch.run_peer("llama-cpp", tmp_path / "w.json", tmp_path, threads=1, batch=4,
                          overrides={"llama-cpp": str(tmp_path / "nope" / "python")})
    assert res.status == "not installed"


def test_a_worker_whose_library_does_not_import_says_not_installed(tmp_path: Path) -> None:
    # this python has no vllm (or, if it has, the worker runs; either way the answer is an honest status)
    wl.save({"mixed-greedy": [wl.Request([5, 6, 7], 2, 0.0, 1.0)]}, tmp_path / "w.json")
    res = launch.run_peer("vllm", tmp_path / "w.json", tmp_path, threads=1, batch=4,
                          overrides={"vllm": sys.executable}, timeout=120)
    try:
        import vllm  # noqa: F401
    except ImportError:
        assert res.status == "not installed" and "vllm" in res.detail


def test_thread_env_pins_every_library() -> None:
    env = launch.thread_env(3, base={})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-2"
    assert launch.thread_env(1, base={})["VLLM_CPU_OMP_THREADS_BIND"] == "0"


def test_a_crashed_worker_is_reported_failed_with_its_last_line() -> None:
    res = launch.parse_result("x", "some output\n", "Traceback ...\nValueError: boom\n", 1)
    assert res.status == "failed" and res.detail == "ValueError: boom"
    ok = launch.parse_result("x", 'PEER-RESULT {"status": "ok", "seconds": {"a": 1.5}, "threads": 2}\n', "", 0)
    assert ok.status == "ok" and ok.seconds == {"a": 1.5} and ok.threads == 2
