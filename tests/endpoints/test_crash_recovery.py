"""``kill -9`` while the learner trains, while it saves a version, and while the engine swaps one in: after a
restart the server serves the last promoted version, never loads a partial one, and every acknowledged example
and feedback is in the store.

Each case runs the real server (tiny checkpoint) in a subprocess: one version is promoted first, then a second
learning task is cut short by SIGKILL, either from a crash point inside the server (``APHRODITE_CRASH_AT``,
aphrodite/common/faults.py: the same signal ``kill -9`` sends, at an exact place) or from this test while
the worker process is training. Bounded: a few requests and two learning tasks per case.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from aphrodite.common.faults import CRASH_ENV
from tests.polling import until
from tests.server_process import RemoteServer

DEADLINE_S = 90.0


def server_args(model_dir: Path, learning_dir: Path, *extra: str) -> list[str]:
    return ["--model", str(model_dir), "--served-model-name", "tiny", "--max-model-len", "128",
            "--enable-continuous-learning", "--learning-dir", str(learning_dir),
            "--learning-background-interval", "3600", "--learning-min-interactions", "1",
            "--learning-quality-predictor", "none", "--no-learning-learner-protect-shipped-facts",
            "--learning-canary-share", "0", *extra]




def acknowledged_writes(url: str, k: int) -> list[str]:
    """A served chat, feedback on it and a curated example; returns the ids the server acknowledged."""
    chat = httpx.post(url + "/v1/chat/completions", timeout=30, json={
        "messages": [{"role": "user", "content": f"Hello {k}"}], "max_tokens": 4, "temperature": 0})
    assert chat.status_code == 200
    fb = httpx.post(url + "/v1/learning/feedback", timeout=30, json={
        "response_id": chat.json()["id"], "user_satisfaction": 1.0, "comment": f"fine {k}"})
    manual = httpx.post(url + "/v1/learning/manual", timeout=30, json={
        "prompt": f"Say word {k}", "response": f"Word number {k} is here.", "performance_feedback": 0.9})
    assert fb.status_code == 200 and manual.status_code == 200, (fb.text, manual.text)
    return [chat.json()["id"], fb.json()["id"], manual.json()["id"]]


def trigger(url: str) -> None:
    r = httpx.post(url + "/v1/learning/control", json={"action": "trigger"}, timeout=30)
    assert r.status_code == 200 and "started" in r.json()["message"], r.text


def serving(url: str) -> int:
    return httpx.get(url + "/v1/learning/status", timeout=30).json()["weight_version"]


def worker_pids(pid: int) -> list[int]:
    """Child processes of the server, started by any of its threads (the learning worker; Linux /proc)."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def training(pid: int) -> bool:
    """The process has used more CPU than starting a worker takes (importing torch: about 3 s here), so it is
    in its training loop (utime + stime, in clock ticks of 1/100 s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]) > 800


def stored_ids(learning_dir: Path) -> set[str]:
    db = sqlite3.connect(f"file:{learning_dir / 'learning.db'}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT id FROM interactions UNION SELECT id FROM feedback")}
    finally:
        db.close()


@pytest.mark.parametrize("crash", ["training", "version.written:2", "version.renamed:2", "engine.swap:2"])
def test_kill_9_during_learning_loses_nothing_and_loads_nothing_partial(crash, tiny_model_dir, tmp_path):
    learning_dir = tmp_path / "learning"
    slow = ["--learning-learner-steps", "3000", "--learning-learner-stop-loss", "0"] if crash == "training" else []
    env = {} if crash == "training" else {CRASH_ENV: crash}
    server = RemoteServer(server_args(tiny_model_dir, learning_dir), env=env)
    try:
        acked = acknowledged_writes(server.url, 1)
        trigger(server.url)
        until("version 1 to serve", lambda: serving(server.url) == 1, DEADLINE_S)
        acked += acknowledged_writes(server.url, 2)
        if crash == "training":  # restart with a long task, then kill -9 while its worker trains
            server.stop()
            server = RemoteServer(server_args(tiny_model_dir, learning_dir, *slow))
            acked += acknowledged_writes(server.url, 3)
            trigger(server.url)
            worker = until("the worker to train", lambda: [p for p in worker_pids(server.proc.pid) if training(p)],
                           DEADLINE_S)
            server.kill()
            until("the orphaned worker to end", lambda: not Path(f"/proc/{worker[0]}").exists() or
                  "Z" in Path(f"/proc/{worker[0]}/stat").read_text().rsplit(")", 1)[1].split()[0], 15)
        else:  # the crash point kills the server during the second task
            trigger(server.url)
            until("the crash point", lambda: server.proc.poll() is not None, DEADLINE_S)
            assert server.proc.returncode == -9
    finally:
        server.stop()

    versions_dir = learning_dir / "versions"
    assert not list(versions_dir.glob(".v*")) or crash == "version.written:2"  # the partial one, left for start
    with RemoteServer(server_args(tiny_model_dir, learning_dir)) as again:
        assert serving(again.url) == 1  # the last promoted version, nothing newer, nothing partial
        listed = httpx.get(again.url + "/v1/learning/versions", timeout=30).json()
        kept = [v["version"] for v in listed["data"]]
        assert kept == ([0, 1, 2] if crash in ("version.renamed:2", "engine.swap:2") else [0, 1])
        assert [v["version"] for v in listed["data"] if v["serving"]] == [1]
        assert not list(versions_dir.glob(".v*"))  # a partial version is removed at start, never loaded
        r = httpx.post(again.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=30)
        assert r.status_code == 200 and r.headers["x-aphrodite-weight-version"] == "1"
        assert set(acked) <= stored_ids(learning_dir)  # every acknowledged write survived
