"""A full learning disk under the real server (a subprocess): a small tmpfs filled up when this test may mount
one (root), and the store's fault-injection file otherwise. Serving goes on, every lost capture is counted,
health is 503 ``degraded`` with the reason, a control action that could not be recorded changes nothing, and
everything recovers when space returns."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from aphrodite.continuous_learning.store.sqlite import FAULT_FILE_ENV
from tests.server_process import RemoteServer


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(fs: Path) -> Callable[[], None]:
    """Fill the filesystem; returns what frees the space again."""
    ballast = fs / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
    return ballast.unlink


@contextlib.contextmanager
def disk(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Callable]]:
    """(learning dir, make_full) where make_full() fills the disk and returns what frees it."""
    if kind == "fault_file":
        fault = tmp_path / "disk-full"
        monkeypatch.setenv(FAULT_FILE_ENV, str(fault))
        yield tmp_path / "learning", lambda: (fault.touch(), fault.unlink)[1]
        return
    with small_tmpfs(tmp_path / "tmpfs") as fs:
        yield fs / "learning", lambda: fill(fs)


def complete(server: RemoteServer) -> str:
    r = httpx.post(server.url + "/v1/completions", timeout=30,
                   json={"model": "tiny", "prompt": "Paris is", "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def poll(server: RemoteServer, path: str, ok: Callable[[dict], bool]) -> dict:
    deadline = time.monotonic() + 15
    while True:
        body = httpx.get(server.url + path, timeout=10).json()
        if ok(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["fault_file", "tmpfs"])
def test_a_full_learning_disk_under_the_real_server(kind, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with disk(kind, tmp_path, monkeypatch) as (learning_dir, make_full):
        args = ["--model", str(tiny_model_dir), "--served-model-name", "tiny", "--max-model-len", "128",
                "--enable-continuous-learning", "--learning-dir", str(learning_dir)]
        with RemoteServer(args, log_path=tmp_path / "server.log") as server:
            first = complete(server)
            poll(server, "/v1/learning/metrics", lambda m: m["capture"]["stored"] == 1)
            free = make_full()

            for _ in range(3):
                complete(server)  # serving goes on
            poll(server, "/v1/learning/status", lambda s: s["system_health"]["dropped_interactions"] == 3)
            h = httpx.get(server.url + "/v1/learning/health", timeout=10)
            assert h.status_code == 503 and h.json()["status"] == "degraded", h.text
            assert "disk is full" in h.json()["reason"]
            r = httpx.post(server.url + "/v1/learning/control", json={"action": "pause"}, timeout=10)
            assert r.status_code == 503 and r.json()["error"]["code"] == "learning_store_unavailable"
            r = httpx.post(server.url + "/v1/learning/feedback", json={"response_id": first, "user_satisfaction": 1},
                           timeout=10)
            assert r.status_code == 503
            status = httpx.get(server.url + "/v1/learning/status", timeout=10).json()
            assert status["paused"] is False and status["overview"]["feedback_count"] == 0  # nothing changed

            free()  # space returns
            h = httpx.get(server.url + "/v1/learning/health", timeout=10)
            assert h.status_code == 200 and h.json()["status"] == "healthy", h.text
            r = httpx.post(server.url + "/v1/learning/control", json={"action": "pause"}, timeout=10)
            assert r.status_code == 200 and r.json()["paused"] is True
            complete(server)
            poll(server, "/v1/learning/metrics", lambda m: m["capture"]["stored"] == 2)
        db = sqlite3.connect(learning_dir / "learning.db")
        try:
            assert db.execute("SELECT COUNT(*) FROM interactions").fetchone()[0] == 2
            assert dict(db.execute("SELECT key, value FROM learning_state"))["paused"] == "true"
        finally:
            db.close()
