"""Hot swaps under load: 16 concurrent chat clients (half streaming) keep running while at least 20 versions
are promoted and 2 rolled back. Zero failed requests, and every response's ``x-aphrodite-weight-version``
names a version that was serving at some moment while that request ran.

What "serving at some moment" means here: a monitor polls ``/v1/learning/status`` all the time; a run of
polls that saw version v bounds v's serving window from the start of the poll before the run to the end of the
poll after it. A response of version v passes when its own interval overlaps one of v's windows.

Bounded: loopback only, 16 clients with a short pause between requests (so the nice-19 learning worker gets CPU
on 2 cores), at most 5000 requests each, a 400 s deadline for the whole run.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import httpx

from tests.server_process import RemoteServer

CLIENTS, PROMOTIONS, ROLLBACK_AFTER = 16, 20, (7, 14)
MAX_REQUESTS, DEADLINE_S = 5000, 400.0


@dataclass
class Served:
    start: float
    end: float
    version: int


def chat(client: httpx.Client, url: str, k: int, stream: bool) -> Served | str:
    """One chat request; the served version and the request's interval, or what went wrong."""
    body = {"messages": [{"role": "user", "content": f"Tell me about {k}"}], "max_tokens": 8, "stream": stream}
    start = time.monotonic()
    try:
        if not stream:
            r = client.post(url + "/v1/chat/completions", json=body)
            ok = r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
            return Served(start, time.monotonic(), int(r.headers["x-aphrodite-weight-version"])) if ok \
                else f"{r.status_code}: {r.text[:200]}"
        with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
            if r.status_code != 200 or lines[-1] != "data: [DONE]":
                return f"stream {r.status_code}: {lines[-2:]}"
            json.loads(lines[-2][6:])  # the last chunk parses
            return Served(start, time.monotonic(), int(r.headers["x-aphrodite-weight-version"]))
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"


def test_zero_failed_requests_across_20_promotions_and_2_rollbacks(tiny_model_dir, tmp_path) -> None:
    args = ["--model", str(tiny_model_dir), "--served-model-name", "tiny", "--max-model-len", "128",
            "--enable-continuous-learning", "--learning-dir", str(tmp_path / "learning"),
            "--learning-background-interval", "0.5", "--learning-min-interactions", "1",
            "--learning-quality-predictor", "none", "--no-learning-learner-protect-shipped-facts",
            "--learning-learner-keep-versions", "32", "--examples-rate", "0", "--examples-daily-quota", "0",
            "--learning-canary-share", "0",  # each promotion serves everyone at once
            "--learning-learner-rehearsal-examples", "0"]  # 20 short tasks, not 20 ever longer ones
    served: list[Served] = []
    failures: list[str] = []
    polls: list[tuple[float, float, int]] = []
    stop = threading.Event()
    with RemoteServer(args) as server:
        url = server.url

        def client_loop(i: int) -> None:
            with httpx.Client(timeout=60) as client:
                for k in range(MAX_REQUESTS):
                    if stop.is_set():
                        return
                    result = chat(client, url, k, stream=i % 2 == 0)
                    (served if isinstance(result, Served) else failures).append(result)
                    stop.wait(0.05)

        def monitor() -> None:
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    t0 = time.monotonic()
                    version = client.get(url + "/v1/learning/status").json()["weight_version"]
                    polls.append((t0, time.monotonic(), version))
                    stop.wait(0.02)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=monitor))
        for t in threads:
            t.start()
        deadline = time.monotonic() + DEADLINE_S
        promoted, rolled_back = [], []
        try:
            with httpx.Client(timeout=60) as admin:
                for k in range(PROMOTIONS):
                    before = polls[-1][2] if polls else 0
                    r = admin.post(url + "/v1/learning/manual", json={
                        "prompt": f"Say word {k}", "response": f"Word number {k} is here.",
                        "performance_feedback": 0.9})
                    assert r.status_code == 200, r.text
                    while not polls or polls[-1][2] == before:  # the background loop picks the example up
                        assert time.monotonic() < deadline, f"only {len(promoted)} promotions in time"
                        time.sleep(0.05)
                    promoted.append(polls[-1][2])
                    if k + 1 in ROLLBACK_AFTER:
                        r = admin.post(url + "/v1/learning/control", json={"action": "rollback"})
                        assert r.status_code == 200, r.text
                        while polls[-1][2] == promoted[-1]:
                            assert time.monotonic() < deadline, "the rollback never served"
                            time.sleep(0.05)
                        rolled_back.append((promoted[-1], polls[-1][2]))
                time.sleep(0.5)  # traffic on the last version too
        finally:
            stop.set()
            for t in threads:
                t.join(60)

    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:3]}"
    assert len(set(promoted)) == PROMOTIONS and len(rolled_back) == 2
    windows: dict[int, list[tuple[float, float]]] = {}
    for i, (_, _, version) in enumerate(polls):
        if i == 0 or polls[i - 1][2] != version:  # a run of polls that saw ``version`` starts here
            start = polls[i - 1][0] if i else 0.0
            j = i
            while j + 1 < len(polls) and polls[j + 1][2] == version:
                j += 1
            end = polls[j + 1][1] if j + 1 < len(polls) else float("inf")
            windows.setdefault(version, []).append((start, end))
    wrong = [s for s in served if not any(s.start <= end and s.end >= start for start, end in windows.get(s.version, []))]
    assert len(served) > 20 * CLIENTS and not wrong, f"{len(wrong)} of {len(served)} responses name a version " \
                                                    f"that was not serving during them, e.g. {wrong[:3]}"
    assert len({s.version for s in served}) >= PROMOTIONS // 2  # traffic really spanned the swaps
    print(f"{len(served)} responses, 0 failed, {len({s.version for s in served})} versions seen by traffic, "
          f"{len(promoted)} promotions, rollbacks {rolled_back}, {len(polls)} status polls")
