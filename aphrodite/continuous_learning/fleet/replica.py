"""``FleetReplica``: one server's membership of a fleet of replicas sharing a PostgreSQL learning store.

- **One leader.** Each replica holds one dedicated connection and tries ``pg_try_advisory_lock`` on it; the
  holder is the leader and the only replica that learns. The lock is session-level: when the leader's process
  dies or its connection breaks, PostgreSQL releases it and another replica takes it at its next check.
- **One version.** A version that starts serving on a replica (the leader's promotion, any replica's rollback)
  is published: its PEFT files go into ``fleet_versions``, ``fleet_serving`` is set with a compare-and-set on
  the version this replica last saw (a replica that had not seen the latest change loses, and follows), and a
  ``NOTIFY`` on the same transaction wakes every replica. Each replica ``LISTEN``s, fetches the version if it
  lacks it (into its own versions directory) and serves it from the engine's next safe point.
- **Restarts.** ``start`` serves the fleet's current version before the server takes traffic.
- **Status.** A heartbeat row per replica (its version); the leader is read from ``pg_locks``.

While PostgreSQL is away the replica keeps serving what it serves; it is no leader (learning pauses) and it
reconnects every ``fleet_poll_s``. A version it promoted but could not publish is published on reconnection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from safetensors.torch import load as load_safetensors

from aphrodite.continuous_learning.learner.peft_format import from_peft

logger = logging.getLogger(__name__)
LEADER_LOCK = 0x6C6561  # advisory lock key of the learning leader ("lea")
CHANNEL = "aphrodite_fleet"


class FleetReplica:
    """Leader election, version announcements and the serving version's sync for one replica."""

    def __init__(self, system: Any, url: str, replica_id: str = "", replica_url: str = "",
                 poll_s: float = 1.0) -> None:
        self.system = system
        self.url = url
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.replica_url = replica_url
        self.poll_s = poll_s
        self.is_leader = False
        self.connected = False
        self.error: str | None = None
        self.fleet_version: int | None = None
        """The fleet's serving version as this replica last saw it."""
        self.snapshot: dict[str, Any] = {}
        """The fleet as last read (leader, replicas), for status without a query on the event loop."""
        self._unpublished: tuple[int, Path | None] | None = None
        self._conn: psycopg.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="learning-fleet", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Serve the fleet's current version, then follow the fleet on a background thread."""
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._connect)
            version = await asyncio.to_thread(self._serving_to_apply)
            if version is not None:
                await self._serve(version)
        except Exception as exc:  # PostgreSQL away at start, or a version it cannot give: serve what is local
            logger.warning("fleet: could not serve the fleet's version at start (%s); catching up later", exc)
            self._disconnect(exc)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 10)
        self._disconnect(None)

    # -- what the system calls -----------------------------------------------------------------------------
    def may_learn(self) -> bool:
        return self.is_leader and self.connected

    async def publish(self, version: int, path: Path | None) -> None:
        """A version started serving here: make it the fleet's (unless it came from the fleet)."""
        if version == self.fleet_version:
            return
        try:
            await asyncio.to_thread(self._publish, version, path)
        except psycopg.Error as exc:
            logger.warning("could not publish weight version %d to the fleet (%s); retrying on reconnection",
                           version, exc)
            self._unpublished = (version, path)

    def report(self) -> dict[str, Any]:
        return {"replica_id": self.replica_id, "is_leader": self.is_leader, "connected": self.connected,
                "error": self.error, "fleet_version": self.fleet_version, **self.snapshot}

    # -- the fleet thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._connect()
                self._tick()
                for _ in conn.notifies(timeout=self.poll_s, stop_after=1):
                    pass
            except psycopg.Error as exc:
                self._disconnect(exc)
                self._stop.wait(self.poll_s)
            except Exception as exc:  # noqa: BLE001 - the thread outlives any one failure
                logger.exception("fleet sync step failed")
                self.error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(self.poll_s)

    def _connect(self) -> psycopg.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5, application_name=self.replica_id[:63])
        conn.execute(f"LISTEN {CHANNEL}")
        self._conn, self.connected, self.error = conn, True, None
        logger.info("fleet: replica %s connected", self.replica_id)
        return conn

    def _disconnect(self, exc: BaseException | None) -> None:
        if exc is not None:
            if self.connected:
                logger.warning("fleet: lost PostgreSQL (%s); learning pauses, serving goes on", exc)
            self.error = str(exc).strip() or type(exc).__name__
        self.connected = self.is_leader = False
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def _tick(self) -> None:
        conn = self._conn
        assert conn is not None
        if not self.is_leader:
            self.is_leader = bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()[0])
            if self.is_leader:
                logger.info("fleet: replica %s leads (it learns)", self.replica_id)
                self._fetch_missing()
        if self._unpublished is not None:  # cleared only once published (or refused by the compare-and-set)
            self._publish(*self._unpublished)
            self._unpublished = None
        version = self._serving_to_apply()
        if version is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._serve(version), self._loop).result(timeout=120)
        if self._loop is not None:  # control actions (enable, pause, ...) sent to any replica reach this one
            asyncio.run_coroutine_threadsafe(self.system.reload_state(), self._loop).result(timeout=60)
        conn.execute("INSERT INTO fleet_replicas (replica_id, url, version, leader, started, heartbeat) VALUES "
                     "(%s, %s, %s, %s, extract(epoch from now()), extract(epoch from now())) ON CONFLICT "
                     "(replica_id) DO UPDATE SET url = excluded.url, version = excluded.version, leader = "
                     "excluded.leader, heartbeat = excluded.heartbeat",
                     (self.replica_id, self.replica_url, self._engine_version(), self.is_leader))
        self._read_snapshot(conn)

    # -- versions ------------------------------------------------------------------------------------------
    def _engine_version(self) -> int:
        return int(getattr(self.system.engine, "weight_version", 0) or 0)

    def _serving_to_apply(self) -> int | None:
        """The fleet's serving version if this replica must switch to it (fetched into the versions directory
        if this replica lacks it); None when it serves it already."""
        conn = self._conn if self._conn is not None else self._connect()
        row = conn.execute("SELECT version FROM fleet_serving WHERE id = 1").fetchone()
        self.fleet_version = version = 0 if row is None else int(row[0])
        if version == self._engine_version():
            return None
        self._fetch(version)
        return version

    def _fetch(self, version: int) -> dict | None:
        """Copy a version from the store into the local versions directory (None: it is there, or it is 0)."""
        learner = self.system.learner
        if version == 0 or learner is None or version in learner.versions.versions():
            return None
        conn = self._conn
        assert conn is not None
        row = conn.execute("SELECT adapter_config, adapter_weights, manifest FROM fleet_versions WHERE version = %s",
                           (version,)).fetchone()
        if row is None:
            raise RuntimeError(f"the fleet serves version {version} but fleet_versions lacks it")
        config, weights, manifest = json.loads(row[0]), bytes(row[1]), json.loads(row[2])
        deltas = from_peft(load_safetensors(weights), config, learner.versions.sizes)
        manifest.pop("version", None)
        learner.versions.save(version, deltas, {**manifest, "fetched_from_fleet": True})
        learner.versions.prune(serving=self._engine_version())
        return deltas

    def _fetch_missing(self) -> None:
        """A new leader first copies every version it lacks, so the ids it gives new versions are new."""
        learner = self.system.learner
        if learner is None or self._conn is None:
            return
        have = set(learner.versions.versions())
        for (version,) in self._conn.execute("SELECT version FROM fleet_versions ORDER BY version").fetchall():
            if version not in have:
                self._fetch(version)

    async def _serve(self, version: int) -> None:
        learner = self.system.learner
        if learner is None or version == self._engine_version():
            return
        await learner.serve(version, reason="the fleet serves it")

    def _publish(self, version: int, path: Path | None) -> None:
        with self.system.store.connection() as conn, conn.transaction():  # a pooled connection of its own
            if version and path is not None:
                config = (path / "adapter_config.json").read_text()
                weights = (path / "adapter_model.safetensors").read_bytes()
                manifest = (path / "manifest.json").read_text()
                parent = json.loads(manifest).get("parent")
                conn.execute("INSERT INTO fleet_versions (version, parent, created, adapter_config, adapter_weights, "
                             "manifest, replica_id) VALUES (%s, %s, extract(epoch from now()), %s, %s, %s, %s) "
                             "ON CONFLICT (version) DO NOTHING",
                             (version, parent, config, weights, manifest, self.replica_id))
            expected = self.fleet_version if self.fleet_version is not None else 0
            changed = conn.execute("UPDATE fleet_serving SET version = %s, changed = extract(epoch from now()), "
                                   "replica_id = %s WHERE id = 1 AND version = %s",
                                   (version, self.replica_id, expected)).rowcount
            if changed:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"version": version,
                                                                               "by": self.replica_id})))
        if not changed:
            logger.warning("fleet: version %d not published: the fleet changed since this replica last looked; it "
                           "follows the fleet", version)
            return
        self.fleet_version = version
        logger.info("fleet: weight version %d published", version)

    def _read_snapshot(self, conn: psycopg.Connection) -> None:
        leader = conn.execute("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                              "WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s",
                              (LEADER_LOCK,)).fetchone()
        serving = conn.execute("SELECT version, changed, extract(epoch from now()) FROM fleet_serving WHERE id = 1"
                               ).fetchone()
        version, changed, now = serving if serving is not None else (0, 0.0, time.time())
        rows = conn.execute("SELECT replica_id, url, version, leader, heartbeat FROM fleet_replicas "
                            "ORDER BY replica_id").fetchall()
        self.snapshot = {
            "leader": leader[0] if leader else None,
            "serving_version": version,
            "replicas": [{"replica_id": rid, "url": url or None, "version": v, "leader": leader is not None
                          and rid == leader[0], "heartbeat_age_s": round(float(now) - hb, 3),
                          "lag_s": 0.0 if v == version else round(float(now) - float(changed), 3)}
                         for rid, url, v, _, hb in rows],
        }
