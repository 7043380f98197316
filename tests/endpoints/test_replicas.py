"""Three replicas on one PostgreSQL learn as one (issue 12), each a real server in a subprocess on loopback:

1. taught through replica A, the leader promotes a version and all three serve it within 5 s;
2. ``kill -9`` of the leader while it trains: another replica leads within 15 s, no acknowledged write is lost,
   and the killed replica, restarted, serves the fleet's version before it takes traffic;
3. PostgreSQL stopped for 10 s: every replica goes on serving, captures are counted as dropped, learning pauses
   (no leader), and after PostgreSQL is back a leader is elected and learning resumes.

Bounded: a few requests per step and three small learning tasks; every wait polls with a deadline.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from tests.endpoints.test_crash_recovery import acknowledged_writes, serving, until
from tests.postgres_server import fresh_url
from tests.server_process import RemoteServer

NAMES = ("A", "B", "C")


def replica_args(model_dir, learning_dir, url: str, name: str) -> list[str]:
    return ["--model", str(model_dir), "--served-model-name", "tiny", "--max-model-len", "128",
            "--enable-continuous-learning", "--learning-dir", str(learning_dir / name), "--learning-store", url,
            "--learning-replica-id", name, "--learning-fleet-poll-s", "0.5",
            "--learning-background-interval", "3600", "--learning-min-interactions", "1",
            "--learning-canary-share", "0",  # a promotion serves everyone at once (canaries: test_canary_server)
            "--learning-quality-predictor", "none", "--no-learning-learner-protect-shipped-facts",
            "--learning-learner-worker", "thread", "--learning-feedback-wait-s", "1"]


class Fleet:
    def __init__(self, model_dir, learning_dir, url: str) -> None:
        self.args = lambda name: replica_args(model_dir, learning_dir, url, name)
        with ThreadPoolExecutor(3) as pool:
            self.servers = dict(zip(NAMES, pool.map(lambda n: RemoteServer(self.args(n)), NAMES)))

    def status(self, name: str) -> dict:
        return httpx.get(self.servers[name].url + "/v1/learning/status", timeout=30).json()

    def leader(self) -> str | None:
        """The leader as every live replica reports it (None until they agree on one that is alive)."""
        seen = set()
        for name, server in self.servers.items():
            if server.proc.poll() is None:
                fleet = self.status(name)["fleet"]
                seen.add(fleet["leader"] if fleet["connected"] else None)
        leader = seen.pop() if len(seen) == 1 else None
        return leader if leader in self.servers and self.servers[leader].proc.poll() is None else None

    def stop(self) -> None:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda server: server.stop(), self.servers.values()))


@pytest.fixture(scope="module")
def fleet(tiny_model_dir, tmp_path_factory, postgres):
    url = fresh_url(postgres.url)
    f = Fleet(tiny_model_dir, tmp_path_factory.mktemp("replicas"), url)
    f.url = url
    yield f
    f.stop()


def trigger_on(fleet: Fleet, name: str) -> None:
    r = httpx.post(fleet.servers[name].url + "/v1/learning/control", json={"action": "trigger"}, timeout=60)
    assert r.status_code == 200 and "started" in r.json()["message"], r.text


def test_taught_through_one_replica_all_serve_the_promoted_version(fleet):
    leader = until("one leader", fleet.leader, 15)
    acknowledged_writes(fleet.servers["A"].url, 1)  # served, rated and an example, all through A
    trigger_on(fleet, leader)
    until("the leader to promote version 1", lambda: serving(fleet.servers[leader].url) == 1, 90)
    promoted = time.monotonic()
    until("all replicas to serve version 1", lambda: all(serving(s.url) == 1 for s in fleet.servers.values()), 5)
    print(f"\nall replicas served version 1 {time.monotonic() - promoted:.2f} s after the leader did")
    status = fleet.status("B")["fleet"]
    assert status["leader"] == leader and status["serving_version"] == 1
    assert {r["replica_id"] for r in status["replicas"]} == set(NAMES)
    r = httpx.post(fleet.servers["C"].url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=30)
    assert r.headers["x-aphrodite-weight-version"] == "1"
    follower = next(n for n in NAMES if n != leader)
    for action, paused in (("pause", True), ("resume", False)):  # a control action sent to any replica
        r = httpx.post(fleet.servers[follower].url + "/v1/learning/control", json={"action": action}, timeout=30)
        assert r.status_code == 200, r.text
        until(f"{action} to reach the leader", lambda: fleet.status(leader)["paused"] is paused, 5)


def test_kill_9_of_the_leader_mid_task_another_leads_and_nothing_acknowledged_is_lost(fleet):
    old = until("one leader", fleet.leader, 15)
    others = [n for n in NAMES if n != old]
    acked = acknowledged_writes(fleet.servers[others[0]].url, 2) + acknowledged_writes(fleet.servers[old].url, 3)
    trigger_on(fleet, old)
    fleet.servers[old].kill()  # while its learning task runs
    killed = time.monotonic()
    new = until("another replica to lead", fleet.leader, 15)
    print(f"\nreplica {new} led {time.monotonic() - killed:.2f} s after kill -9 of leader {old}")
    assert new in others
    with psycopg.connect(fleet.url) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM interactions UNION SELECT id FROM feedback")}
    assert set(acked) <= stored
    version = serving(fleet.servers[new].url)
    fleet.servers[old] = RemoteServer(fleet.args(old))  # healthy only after it serves the fleet's version
    assert serving(fleet.servers[old].url) == version == fleet.status(old)["fleet"]["serving_version"]


def test_postgres_away_serving_goes_on_captures_are_counted_and_learning_pauses(fleet, postgres):
    if postgres.stop is None:
        pytest.skip("an external PostgreSQL ($APHRODITE_TEST_POSTGRES_URL) is not stopped by tests")
    until("one leader", fleet.leader, 15)
    before = {n: fleet.status(n)["system_health"]["dropped_interactions"] for n in NAMES}
    postgres.stop()
    stopped = time.monotonic()
    try:
        until("every replica to notice", lambda: not any(fleet.status(n)["fleet"]["connected"] or
                                                        fleet.status(n)["fleet"]["is_leader"] for n in NAMES), 10)
        for name, server in fleet.servers.items():  # serving goes on
            r = httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=30)
            assert r.status_code == 200
        until("the captures to be counted as dropped", lambda: all(
            fleet.status(n)["system_health"]["dropped_interactions"] > before[n] for n in NAMES), 30)
        r = httpx.post(fleet.servers["A"].url + "/v1/learning/control", json={"action": "trigger"}, timeout=60)
        assert "started" not in r.text  # learning paused: no leader
        time.sleep(max(0.0, 10.0 - (time.monotonic() - stopped)))  # the outage lasts 10 s, as the issue asks
    finally:
        postgres.start()
        restarted = time.monotonic()
    leader = until("a leader again", fleet.leader, 30)
    print(f"\nPostgreSQL down {restarted - stopped:.1f} s; replica {leader} led "
          f"{time.monotonic() - restarted:.2f} s after it was back")
    acknowledged_writes(fleet.servers["B"].url, 4)
    version = serving(fleet.servers[leader].url)
    trigger_on(fleet, leader)  # learning resumes
    until("a new version everywhere", lambda: all(serving(s.url) == version + 1 for s in fleet.servers.values()), 90)
