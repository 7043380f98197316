"""``InteractionStore`` on PostgreSQL (``--learning-store postgresql://...``): the schema and versioned
migrations of the SQLite store in PostgreSQL's dialect, over a small psycopg 3 connection pool.

Several servers (replicas) may share one database: migrations run under a transaction-level advisory lock, so
replicas starting together migrate once; every write is one transaction.

Durability: every write is committed before the method returns, with ``synchronous_commit`` on (the
server's default): an acknowledged write is in PostgreSQL's write-ahead log on disk.

Faults: as in the SQLite store, ``write_error`` says why the last write failed (None once one succeeds), and
``fail_writes`` or the file named by ``$APHRODITE_LEARNING_STORE_FAULT_FILE`` make writes fail as a full disk
does. A database that cannot be reached fails the same way (``write_error`` names the connection error); the
pool reconnects once it is back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from aphrodite.continuous_learning.interaction import Interaction
from aphrodite.continuous_learning.store import sqlite as _sqlite
from aphrodite.continuous_learning.store.base import (InteractionStore, StoreCounts, StoredFeedback, StoreError,
                                                     TrainingSignal, fold_outcomes)

_DISK_FULL = "database or disk is full"
_MIGRATION_LOCK = 0x61706872  # advisory lock key held while migrating ("aphr")

# The SQLite migrations, in PostgreSQL's dialect; ``aphrodite_schema.version`` holds how many are applied.
# Append, never edit; a migration appended to one store is appended to the other.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE interactions (
        id TEXT PRIMARY KEY,
        created DOUBLE PRECISION NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        interaction_type TEXT NOT NULL,
        prompt TEXT,
        messages TEXT,
        choices TEXT NOT NULL,
        token_ids BYTEA NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        ttft_ms DOUBLE PRECISION,
        total_ms DOUBLE PRECISION,
        weight_version INTEGER NOT NULL,
        sampling_params TEXT NOT NULL,
        api_key_hash TEXT,
        status_code INTEGER,
        error TEXT,
        performance_feedback DOUBLE PRECISION,
        user_satisfaction DOUBLE PRECISION,
        quality_score DOUBLE PRECISION
    );
    CREATE INDEX interactions_created ON interactions(created);
    CREATE INDEX interactions_quality ON interactions(quality_score);
    CREATE TABLE feedback (
        id TEXT PRIMARY KEY,
        seq BIGSERIAL,
        response_id TEXT NOT NULL REFERENCES interactions(id) ON DELETE CASCADE,
        user_satisfaction DOUBLE PRECISION NOT NULL,
        corrected_response TEXT,
        comment TEXT,
        created DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX feedback_response ON feedback(response_id);
    CREATE TABLE learning_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    "ALTER TABLE interactions ADD COLUMN weight_versions TEXT",
    """
    CREATE TABLE admissions (
        interaction_id TEXT PRIMARY KEY REFERENCES interactions(id) ON DELETE CASCADE,
        rule TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL
    )
    """,
    # replicas sharing this store (PostgreSQL only; fleet/replica.py): versions, the serving one, heartbeats
    """
    CREATE TABLE fleet_versions (
        version INTEGER PRIMARY KEY,
        parent INTEGER,
        created DOUBLE PRECISION NOT NULL,
        adapter_config TEXT NOT NULL,
        adapter_weights BYTEA NOT NULL,
        manifest TEXT NOT NULL,
        replica_id TEXT
    );
    CREATE TABLE fleet_serving (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL,
        changed DOUBLE PRECISION NOT NULL,
        replica_id TEXT
    );
    INSERT INTO fleet_serving (id, version, changed) VALUES (1, 0, 0);
    CREATE TABLE fleet_replicas (
        replica_id TEXT PRIMARY KEY,
        url TEXT,
        version INTEGER NOT NULL,
        leader BOOLEAN NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        heartbeat DOUBLE PRECISION NOT NULL
    )
    """,
    # per-tenant adapters: the tenant an interaction belongs to (NULL: the base model's lineage)
    """
    ALTER TABLE interactions ADD COLUMN tenant TEXT;
    CREATE INDEX interactions_tenant ON interactions(tenant, created)
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = _sqlite._COLUMNS
_INSERT = (f"INSERT INTO interactions ({_COLUMNS}) VALUES ({', '.join(['%s'] * len(_COLUMNS.split(',')))}) "
           "ON CONFLICT (id) DO NOTHING")
_FEEDBACK_COLS = "id, response_id, user_satisfaction, corrected_response, comment, created"
# Bytes a row takes, as PostgreSQL stores it, with its feedback: what the byte bound counts.
_ROW_BYTES = ("pg_column_size(i.*) + coalesce((SELECT sum(pg_column_size(f.*)) FROM feedback f "
              "WHERE f.response_id = i.id), 0)")
_BATCH = 256


class PostgresInteractionStore(InteractionStore):
    """The PostgreSQL store; ``url`` is a libpq connection URL; ``max_bytes`` bounds the records' size."""

    def __init__(self, url: str, max_bytes: int | None = None, pool_size: int = 4,
                 open_timeout_s: float = 10.0) -> None:
        self.url = url
        self.open_timeout_s = open_timeout_s
        self.max_bytes = max_bytes
        self.pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self.write_error: str | None = None
        self.fail_writes = False
        """Test-only fault injection: every write raises as on a full disk."""
        self._fault_file = os.environ.get(_sqlite.FAULT_FILE_ENV) or None
        self._used: int | None = None
        """Bytes the records take, as of the last exact count plus what was written since (an estimate)."""

    # -- connection ----------------------------------------------------------------------------------------
    def open(self) -> None:
        try:
            pool = ConnectionPool(self.url, min_size=1, max_size=self.pool_size, open=False, timeout=5.0,
                                  kwargs={"connect_timeout": 5}, name="aphrodite-learning-store")
            pool.open(wait=True, timeout=self.open_timeout_s)
            self._pool = pool
            with self.connection() as conn, conn.transaction():
                self._migrate(conn)
        except Exception as exc:  # psycopg's errors, the pool's PoolTimeout, a refused connection
            self.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open the learning store at {_redacted(self.url)}: {exc}. Check that "
                             "PostgreSQL is running, that --learning-store names its database, and that the user "
                             "may create tables there.") from None

    def _migrate(self, conn: psycopg.Connection) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS aphrodite_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM aphrodite_schema").fetchone()
        if row is None:
            conn.execute("INSERT INTO aphrodite_schema (version) VALUES (0)")
        version = 0 if row is None else row[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"cannot open the learning store at {_redacted(self.url)}: schema version "
                             f"{version} is newer than this server's {SCHEMA_VERSION}; upgrade Aphrodite")
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("UPDATE aphrodite_schema SET version = %s", (number + 1,))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection (autocommit off: wrap writes in ``conn.transaction()``)."""
        if self._pool is None:
            raise StoreError("the learning store is not open")
        with self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection]:
        """One committed write transaction; its outcome sets ``write_error``."""
        if self.fail_writes or (self._fault_file is not None and os.path.exists(self._fault_file)):
            self.write_error = _DISK_FULL
            raise pg_errors.DiskFull(_DISK_FULL)
        try:
            with self.connection() as conn, conn.transaction():
                yield conn
        except Exception as exc:  # psycopg's errors, or the pool's PoolTimeout while the server is away
            if not isinstance(exc, StoreError):
                self.write_error = str(exc).strip() or type(exc).__name__
            raise
        self.write_error = None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.connection() as conn:
            rows = conn.execute(sql, params).fetchall()
            conn.rollback()  # end the read's transaction: an idle connection holds no snapshot
            return rows

    # -- writes --------------------------------------------------------------------------------------------
    def add_interactions(self, interactions: Sequence[Interaction], durable: bool = False) -> list[Interaction]:
        inserted = []
        with self._write() as conn, conn.cursor() as cur:
            for interaction in interactions:
                row = _sqlite._to_row(interaction)
                cur.execute(_INSERT, row)
                if cur.rowcount:
                    inserted.append(interaction)
                    self._grow(row)
        return inserted

    def add_feedback(self, feedback: StoredFeedback, interaction: Interaction) -> bool:
        with self._write() as conn:
            row = _sqlite._to_row(interaction)
            inserted = conn.execute(_INSERT, row).rowcount > 0
            conn.execute("UPDATE interactions SET user_satisfaction = %s, quality_score = %s WHERE id = %s",
                         (interaction.user_satisfaction, interaction.quality_score, interaction.id))
            conn.execute(f"INSERT INTO feedback ({_FEEDBACK_COLS}) VALUES (%s, %s, %s, %s, %s, %s)",
                         (feedback.id, feedback.response_id, feedback.user_satisfaction,
                          feedback.corrected_response, feedback.comment, feedback.created))
        if inserted:
            self._grow(row)
        return inserted

    def delete_interactions(self, ids: Sequence[str]) -> list[str]:
        with self._write() as conn:
            rows = conn.execute("DELETE FROM interactions WHERE id = ANY(%s) RETURNING id", (list(ids),)).fetchall()
        gone = {r[0] for r in rows}
        return [i for i in ids if i in gone]

    def record_admissions(self, admitted: Sequence[tuple[str, str]], now: float) -> None:
        with self._write() as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO admissions (interaction_id, rule, created) SELECT %s, %s, %s WHERE EXISTS "
                            "(SELECT 1 FROM interactions WHERE id = %s) ON CONFLICT (interaction_id) DO UPDATE "
                            "SET rule = excluded.rule, created = excluded.created",
                            [(i, rule, now, i) for i, rule in admitted])

    def probe_write(self) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO learning_state (key, value) VALUES ('_probe', '0') ON CONFLICT (key) DO "
                         "NOTHING")
            conn.execute("DELETE FROM learning_state WHERE key = '_probe'")

    def save_state(self, state: dict[str, Any]) -> None:
        with self._write() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM learning_state")
            cur.executemany("INSERT INTO learning_state (key, value) VALUES (%s, %s)",
                            [(k, json.dumps(v)) for k, v in state.items()])

    # -- reads ---------------------------------------------------------------------------------------------
    def get_interaction(self, interaction_id: str) -> Interaction | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM interactions WHERE id = %s", (interaction_id,))
        return _from_row(rows[0]) if rows else None

    def feedback_for(self, response_id: str) -> list[StoredFeedback]:
        rows = self._read(f"SELECT {_FEEDBACK_COLS} FROM feedback WHERE response_id = %s ORDER BY created, seq",
                          (response_id,))
        return [StoredFeedback(*row) for row in rows]

    def eligible(self, threshold: float, limit: int, min_created: float = 0.0) -> list[Interaction]:
        rows = self._read(f"SELECT {_COLUMNS} FROM interactions WHERE quality_score >= %s AND created >= %s "
                          "ORDER BY created LIMIT %s", (threshold, min_created, limit))
        return [_from_row(row) for row in rows]

    def ratings_by_version(self, versions: list[int]) -> dict[int, list[float]]:
        """Explicit ratings (``user_satisfaction``) of responses whose first token came from each version."""
        found: dict[int, list[float]] = {v: [] for v in versions}
        for version, rating in self._read("SELECT i.weight_version, f.user_satisfaction FROM feedback f JOIN "
                                          "interactions i ON f.response_id = i.id WHERE i.weight_version = "
                                          "ANY(%s)", (list(versions),)):
            found[version].append(rating)
        return found

    def outcomes_by_version(self, versions: list[int], since: float = 0.0) -> dict[int, list[float]]:
        """As SQLite's: explicit ratings, and -1 for a correction, of served responses since ``since``."""
        return fold_outcomes(versions, self._read(
            "SELECT i.weight_version, f.user_satisfaction, f.corrected_response FROM feedback f JOIN "
            "interactions i ON f.response_id = i.id WHERE i.weight_version = ANY(%s) AND i.created >= %s "
            "AND i.interaction_type = 'api'", (list(versions), since)))

    def quality_by_version(self, versions: list[int], since: float = 0.0) -> dict[int, tuple[float | None, int]]:
        rows = self._read("SELECT weight_version, AVG(quality_score), COUNT(*) FROM interactions WHERE "
                          "weight_version = ANY(%s) AND created >= %s AND interaction_type = 'api' "
                          "GROUP BY weight_version", (list(versions), since))
        return {v: (None if q is None else float(q), n) for v, q, n in rows}

    def recent_interactions(self, limit: int) -> list[TrainingSignal]:
        """The newest interactions, each with its latest feedback (the console's list)."""
        cols = ", ".join(f"i.{c.strip()}" for c in _COLUMNS.split(","))
        fb_cols = ", ".join(f"f.{c.strip()}" for c in _FEEDBACK_COLS.split(","))
        rows = self._read(
            f"SELECT {cols}, {fb_cols} FROM (SELECT * FROM interactions ORDER BY created DESC LIMIT %s) i "
            "LEFT JOIN LATERAL (SELECT * FROM feedback f WHERE f.response_id = i.id ORDER BY f.created DESC, "
            "f.seq DESC LIMIT 1) f ON true ORDER BY i.created DESC", (limit,))
        n = len(_COLUMNS.split(","))
        return [TrainingSignal(_from_row(row[:n]), None if row[n] is None else StoredFeedback(*row[n:]))
                for row in rows]

    def feedback_series(self, since: float, bucket_s: float) -> list[tuple[float, int, float]]:
        """(bucket start, feedback count, mean rating) per ``bucket_s`` seconds since ``since``."""
        rows = self._read("SELECT FLOOR((created - %s) / %s)::bigint AS b, COUNT(*), AVG(user_satisfaction) "
                          "FROM feedback WHERE created >= %s GROUP BY b ORDER BY b", (since, bucket_s, since))
        return [(since + b * bucket_s, n, float(mean)) for b, n, mean in rows]

    def training_signals(self, since: float, limit: int, unrated_threshold: float | None = None,
                         tenant: str | None = None) -> list[TrainingSignal]:
        cols = ", ".join(f"i.{c.strip()}" for c in _COLUMNS.split(","))
        fb_cols = ", ".join(f"f.{c.strip()}" for c in _FEEDBACK_COLS.split(","))
        threshold = 2.0 if unrated_threshold is None else unrated_threshold  # scores lie in [0, 1]
        rows = self._read(
            f"SELECT {cols}, {fb_cols} FROM interactions i LEFT JOIN LATERAL (SELECT * FROM feedback f "
            "WHERE f.response_id = i.id ORDER BY f.created DESC, f.seq DESC LIMIT 1) f ON true "
            "WHERE ((i.created > %s AND (i.interaction_type != 'api' OR i.user_satisfaction IS NOT NULL OR "
            "i.quality_score >= %s)) OR i.id IN (SELECT response_id FROM feedback WHERE created > %s)) "
            "AND i.tenant IS NOT DISTINCT FROM %s",
            (since, threshold, since, tenant))
        n = len(_COLUMNS.split(","))
        signals = [TrainingSignal(_from_row(row[:n]), None if row[n] is None else StoredFeedback(*row[n:]))
                   for row in rows]
        signals.sort(key=lambda s: s.created)
        return signals[:limit]

    def counts(self, threshold: float) -> StoreCounts:
        (interactions, eligible, feedback), = self._read(
            "SELECT (SELECT count(*) FROM interactions), (SELECT count(*) FROM interactions WHERE quality_score "
            ">= %s), (SELECT count(*) FROM feedback)", (threshold,))
        return StoreCounts(interactions=interactions, eligible=eligible, feedback=feedback)

    def admitted_by(self, interaction_id: str) -> str | None:
        rows = self._read("SELECT rule FROM admissions WHERE interaction_id = %s", (interaction_id,))
        return rows[0][0] if rows else None

    def load_state(self) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self._read("SELECT key, value FROM learning_state")}

    # -- retention -----------------------------------------------------------------------------------------
    def cleanup(self, max_interactions: int, max_age_s: float, now: float) -> int:
        deleted = 0
        with self._write() as conn:
            if max_age_s > 0:
                deleted += conn.execute("DELETE FROM interactions WHERE created < %s", (now - max_age_s,)).rowcount
            excess = conn.execute("SELECT count(*) FROM interactions").fetchone()[0] - max_interactions
            if excess > 0:
                deleted += conn.execute("DELETE FROM interactions WHERE id IN (SELECT id FROM interactions ORDER BY "
                                        "created LIMIT %s)", (excess,)).rowcount
            if self.max_bytes is not None:
                deleted += self._delete_oldest_until(conn, self.max_bytes)
        return deleted

    def trim_bytes(self) -> int:
        # The running estimate decides when to count exactly (a full scan); past the bound, trim to 90% of it.
        if self.max_bytes is None or (self._used is not None and self._used <= self.max_bytes):
            return 0
        with self._write() as conn:
            return self._delete_oldest_until(conn, int(self.max_bytes * 0.9))

    def used_bytes(self) -> int:
        """Bytes the stored records take (rows as stored, with their feedback)."""
        with self.connection() as conn:
            used = self._count_bytes(conn)
            conn.rollback()
        return used

    def _count_bytes(self, conn: psycopg.Connection) -> int:
        self._used = int(conn.execute(f"SELECT coalesce(sum({_ROW_BYTES}), 0) FROM interactions i").fetchone()[0])
        return self._used

    def _delete_oldest_until(self, conn: psycopg.Connection, target: int) -> int:
        deleted = 0
        excess = self._count_bytes(conn) - target
        while excess > 0:
            rows = conn.execute(f"SELECT i.id, {_ROW_BYTES} FROM interactions i ORDER BY i.created LIMIT "
                                f"{_BATCH}").fetchall()
            doomed, total = [], 0
            for id_, size in rows:
                doomed.append(id_)
                total += size
                if total >= excess:
                    break
            if not doomed:
                break
            conn.execute("DELETE FROM interactions WHERE id = ANY(%s)", (doomed,))
            deleted += len(doomed)
            excess = self._count_bytes(conn) - target
        return deleted

    def _grow(self, row: tuple) -> None:
        if self._used is not None:
            self._used += 120 + sum(len(v) for v in row if isinstance(v, (str, bytes)))


def _from_row(row: Sequence[Any]) -> Interaction:
    row = list(row)
    row[8] = bytes(row[8])  # BYTEA arrives as bytes or memoryview
    return _sqlite._from_row(tuple(row))


def _redacted(url: str) -> str:
    """The URL without its password (it goes into error messages and logs)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "the configured PostgreSQL URL"
    return f"postgresql://{info.get('user', '')}@{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"

