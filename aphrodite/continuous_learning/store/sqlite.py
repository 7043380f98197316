"""``InteractionStore`` on SQLite: one WAL database file with a versioned schema.

Durability: every write is committed before the method returns. Captured traffic is committed with
``synchronous=NORMAL`` (survives a process crash or ``kill -9``; in WAL mode only a power loss can drop the
last commits); feedback, supplied examples and the learning state with ``synchronous=FULL`` (fsync on commit).

Privacy: the directory is made 0700 and learning.db 0600 before SQLite opens it (SQLite gives its -wal and -shm
files the database file's mode). Retention bounds the records by age, count and bytes.

Faults: ``write_error`` says why the last write failed (None once one succeeds). For fault-injection tests,
``fail_writes`` (an attribute) or the file named by ``$APHRODITE_LEARNING_STORE_FAULT_FILE`` (while it exists)
make every write raise ``sqlite3.OperationalError("database or disk is full")``, as a full disk does.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import sys
from array import array
from collections.abc import Sequence
from typing import Any

from aphrodite.continuous_learning.interaction import Choice, Interaction
from aphrodite.continuous_learning.store.base import (InteractionStore, StoreCounts, StoredFeedback, StoreError,
                                                     TrainingSignal, fold_outcomes)
from aphrodite.continuous_learning.store.private import private_dir, private_file, restrict
from aphrodite.continuous_learning.store.retention import delete_oldest_until, used_bytes

FAULT_FILE_ENV = "APHRODITE_LEARNING_STORE_FAULT_FILE"
_DISK_FULL = "database or disk is full"
_WAL_LIMIT_BYTES = 64 << 20
"""The WAL file is truncated back to this size after a checkpoint."""

# Schema migrations; ``PRAGMA user_version`` holds how many have been applied. Append, never edit.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE interactions (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        interaction_type TEXT NOT NULL,
        prompt TEXT,
        messages TEXT,                 -- JSON list of chat messages
        choices TEXT NOT NULL,         -- JSON list of {text, finish_reason, n_tokens}
        token_ids BLOB NOT NULL,       -- every choice's token ids in turn, int32 little-endian
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        ttft_ms REAL,
        total_ms REAL,
        weight_version INTEGER NOT NULL,
        sampling_params TEXT NOT NULL, -- JSON object
        api_key_hash TEXT,
        status_code INTEGER,
        error TEXT,
        performance_feedback REAL,
        user_satisfaction REAL,
        quality_score REAL
    );
    CREATE INDEX interactions_created ON interactions(created);
    CREATE INDEX interactions_quality ON interactions(quality_score);
    CREATE TABLE feedback (
        id TEXT PRIMARY KEY,
        response_id TEXT NOT NULL REFERENCES interactions(id) ON DELETE CASCADE,
        user_satisfaction REAL NOT NULL,
        corrected_response TEXT,
        comment TEXT,
        created REAL NOT NULL
    );
    CREATE INDEX feedback_response ON feedback(response_id);
    CREATE TABLE learning_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # versions: every weight version that produced one of the response's tokens (JSON list of ints)
    "ALTER TABLE interactions ADD COLUMN weight_versions TEXT",
    # signal policy: which rule admitted each interaction into a learning task (latest admission kept)
    """
    CREATE TABLE admissions (
        interaction_id TEXT PRIMARY KEY REFERENCES interactions(id) ON DELETE CASCADE,
        rule TEXT NOT NULL,
        created REAL NOT NULL
    )
    """,
    # per-tenant adapters: the tenant an interaction belongs to (NULL: the base model's lineage)
    """
    ALTER TABLE interactions ADD COLUMN tenant TEXT;
    CREATE INDEX interactions_tenant ON interactions(tenant, created)
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)

_COLUMNS = ("id, created, endpoint, model, interaction_type, prompt, messages, choices, token_ids, prompt_tokens, "
            "completion_tokens, ttft_ms, total_ms, weight_version, sampling_params, api_key_hash, status_code, "
            "error, performance_feedback, user_satisfaction, quality_score, weight_versions, tenant")
_INSERT = f"INSERT OR IGNORE INTO interactions ({_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS.split(',')))})"


class SQLiteInteractionStore(InteractionStore):
    """The SQLite store; ``path`` is the database file (its directory is created); ``max_bytes`` bounds the
    records' size in retention clean-up (None: unbounded)."""

    def __init__(self, path: str, max_bytes: int | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._db: sqlite3.Connection | None = None
        self.write_error: str | None = None
        self.fail_writes = False
        """Test-only fault injection: every write raises as on a full disk."""
        self._fault_file = os.environ.get(FAULT_FILE_ENV) or None

    def open(self) -> None:
        try:
            private_dir(os.path.dirname(os.path.abspath(self.path)))
            private_file(self.path)
            for suffix in ("-wal", "-shm", "-journal"):  # left by an older server with wider modes
                restrict(self.path + suffix)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            self._db = db
            self._migrate(db)
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise StoreError(f"cannot open the learning store {self.path!r}: {exc}. Check that --learning-dir "
                             "is writable and holds an Aphrodite learning database (or point it elsewhere).")

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this server's "
                                        f"{SCHEMA_VERSION}; upgrade Aphrodite")
        for number in range(version, SCHEMA_VERSION):
            with _Transaction(db, durable=True):
                for statement in _MIGRATIONS[number].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={number + 1}")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the learning store is not open")
        return self._db

    def _write(self, durable: bool) -> _Transaction:
        """A write transaction; its outcome sets ``write_error``."""
        if self.fail_writes or (self._fault_file is not None and os.path.exists(self._fault_file)):
            self.write_error = _DISK_FULL
            raise sqlite3.OperationalError(_DISK_FULL)
        return _Transaction(self.db, durable, self)

    def add_interactions(self, interactions: Sequence[Interaction], durable: bool = False) -> list[Interaction]:
        inserted = []
        with self._write(durable):
            for interaction in interactions:
                if self.db.execute(_INSERT, _to_row(interaction)).rowcount:
                    inserted.append(interaction)
        return inserted

    def add_feedback(self, feedback: StoredFeedback, interaction: Interaction) -> bool:
        with self._write(durable=True):
            inserted = self.db.execute(_INSERT, _to_row(interaction)).rowcount > 0
            self.db.execute("UPDATE interactions SET user_satisfaction = ?, quality_score = ? WHERE id = ?",
                            (interaction.user_satisfaction, interaction.quality_score, interaction.id))
            self.db.execute("INSERT INTO feedback (id, response_id, user_satisfaction, corrected_response, comment,"
                            " created) VALUES (?, ?, ?, ?, ?, ?)",
                            (feedback.id, feedback.response_id, feedback.user_satisfaction,
                             feedback.corrected_response, feedback.comment, feedback.created))
        return inserted

    def get_interaction(self, interaction_id: str) -> Interaction | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM interactions WHERE id = ?", (interaction_id,)).fetchone()
        return None if row is None else _from_row(row)

    def feedback_for(self, response_id: str) -> list[StoredFeedback]:
        rows = self.db.execute("SELECT id, response_id, user_satisfaction, corrected_response, comment, created "
                               "FROM feedback WHERE response_id = ? ORDER BY created, rowid", (response_id,))
        return [StoredFeedback(*row) for row in rows]

    def eligible(self, threshold: float, limit: int, min_created: float = 0.0) -> list[Interaction]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM interactions WHERE quality_score >= ? AND created >= ? "
                               "ORDER BY created LIMIT ?", (threshold, min_created, limit))
        return [_from_row(row) for row in rows]

    def ratings_by_version(self, versions: list[int]) -> dict[int, list[float]]:
        """Explicit ratings (``user_satisfaction``) of responses whose first token came from each version."""
        found: dict[int, list[float]] = {v: [] for v in versions}
        marks = ", ".join("?" * len(versions))
        for version, rating in self.db.execute(
                f"SELECT i.weight_version, f.user_satisfaction FROM feedback f JOIN interactions i "
                f"ON f.response_id = i.id WHERE i.weight_version IN ({marks})", versions):
            found[version].append(rating)
        return found

    def outcomes_by_version(self, versions: list[int], since: float = 0.0) -> dict[int, list[float]]:
        """Live outcomes of responses created since ``since``, by the version of their first token: each explicit
        rating (``user_satisfaction``), and -1 for a correction (a corrected response was not good)."""
        marks = ", ".join("?" * len(versions))
        return fold_outcomes(versions, self.db.execute(
            f"SELECT i.weight_version, f.user_satisfaction, f.corrected_response FROM feedback f JOIN "
            f"interactions i ON f.response_id = i.id WHERE i.weight_version IN ({marks}) AND i.created >= ? "
            f"AND i.interaction_type = 'api'", [*versions, since]))

    def quality_by_version(self, versions: list[int], since: float = 0.0) -> dict[int, tuple[float | None, int]]:
        """(mean quality score, responses) of responses created since ``since``, by their first token's version."""
        marks = ", ".join("?" * len(versions))
        rows = self.db.execute(f"SELECT weight_version, AVG(quality_score), COUNT(*) FROM interactions WHERE "
                               f"weight_version IN ({marks}) AND created >= ? AND interaction_type = 'api' "
                               "GROUP BY weight_version",
                               [*versions, since])
        return {v: (q, n) for v, q, n in rows}

    # -- operator's view (console) ----------------------------------------------------------------------------
    def recent_interactions(self, limit: int) -> list[TrainingSignal]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM interactions ORDER BY created DESC, rowid DESC LIMIT ?",
                               (limit,)).fetchall()
        latest = ("SELECT id, response_id, user_satisfaction, corrected_response, comment, created FROM feedback "
                  "WHERE response_id = ? ORDER BY created DESC, rowid DESC LIMIT 1")
        return [TrainingSignal(i, None if fb is None else StoredFeedback(*fb))
                for i in map(_from_row, rows) for fb in [self.db.execute(latest, (i.id,)).fetchone()]]

    def feedback_series(self, since: float, bucket_s: float) -> list[tuple[float, int, float]]:
        rows = self.db.execute("SELECT CAST((created - ?) / ? AS INTEGER) AS b, COUNT(*), AVG(user_satisfaction) "
                               "FROM feedback WHERE created >= ? GROUP BY b ORDER BY b", (since, bucket_s, since))
        return [(since + b * bucket_s, n, mean) for b, n, mean in rows]
    # -- end operator's view -----------------------------------------------------------------------------------

    # -- training signals (learner's signal policy) ------------------------------------------------------------
    def training_signals(self, since: float, limit: int, unrated_threshold: float | None = None,
                         tenant: str | None = None) -> list[TrainingSignal]:
        # Two index-friendly halves: interactions created after ``since`` (index on created), and those with
        # feedback after it; each joined with its latest feedback; then only the lineage's (``IS`` matches NULL).
        cols = ", ".join(f"i.{c.strip()}" for c in _COLUMNS.split(","))
        latest = ("SELECT id, response_id, user_satisfaction, corrected_response, comment, created FROM feedback "
                  "WHERE response_id = i.id ORDER BY created DESC, rowid DESC LIMIT 1")
        rows = self.db.execute(
            f"SELECT {cols} FROM interactions i WHERE ((i.created > ? AND (i.interaction_type != 'api' OR "
            "i.user_satisfaction IS NOT NULL OR i.quality_score >= ?)) OR i.id IN "
            "(SELECT response_id FROM feedback WHERE created > ?)) AND i.tenant IS ?",
            (since, math.inf if unrated_threshold is None else unrated_threshold, since, tenant)).fetchall()
        signals = []
        for row in rows:
            interaction = _from_row(row)
            fb = self.db.execute(latest.replace("i.id", "?"), (interaction.id,)).fetchone()
            signals.append(TrainingSignal(interaction, None if fb is None else StoredFeedback(*fb)))
        signals.sort(key=lambda s: s.created)
        return signals[:limit]
    # -- end training signals ----------------------------------------------------------------------------------

    def counts(self, threshold: float) -> StoreCounts:
        db = self.db
        return StoreCounts(
            interactions=db.execute("SELECT COUNT(*) FROM interactions").fetchone()[0],
            eligible=db.execute("SELECT COUNT(*) FROM interactions WHERE quality_score >= ?",
                                (threshold,)).fetchone()[0],
            feedback=db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def cleanup(self, max_interactions: int, max_age_s: float, now: float) -> int:
        deleted = 0
        with self._write(durable=False):
            if max_age_s > 0:
                deleted += self.db.execute("DELETE FROM interactions WHERE created < ?",
                                           (now - max_age_s,)).rowcount
            excess = self.db.execute("SELECT COUNT(*) FROM interactions").fetchone()[0] - max_interactions
            if excess > 0:
                deleted += self.db.execute("DELETE FROM interactions WHERE rowid IN (SELECT rowid FROM "
                                           "interactions ORDER BY created LIMIT ?)", (excess,)).rowcount
            if self.max_bytes is not None:
                deleted += delete_oldest_until(self.db, self.max_bytes)
        return deleted

    def trim_bytes(self) -> int:
        # Past the bound, trim to 90% of it, so that at the bound not every write pays for a trim.
        if self.max_bytes is None or used_bytes(self.db) <= self.max_bytes:
            return 0
        with self._write(durable=False):
            return delete_oldest_until(self.db, int(self.max_bytes * 0.9))

    def used_bytes(self) -> int:
        """Bytes of learning.db in use (see ``retention.used_bytes``)."""
        return used_bytes(self.db)

    def record_admissions(self, admitted: Sequence[tuple[str, str]], now: float) -> None:
        with self._write(durable=False):
            self.db.executemany("INSERT OR REPLACE INTO admissions (interaction_id, rule, created) SELECT ?, ?, ? "
                                "WHERE EXISTS (SELECT 1 FROM interactions WHERE id = ?)",
                                [(i, rule, now, i) for i, rule in admitted])

    def admitted_by(self, interaction_id: str) -> str | None:
        row = self.db.execute("SELECT rule FROM admissions WHERE interaction_id = ?", (interaction_id,)).fetchone()
        return None if row is None else row[0]

    def delete_interactions(self, ids: Sequence[str]) -> list[str]:
        with self._write(durable=True):
            return [i for i in ids if self.db.execute("DELETE FROM interactions WHERE id = ?", (i,)).rowcount]

    def probe_write(self) -> None:
        """A write that changes nothing, to learn whether writes succeed again (sets ``write_error``)."""
        with self._write(durable=False):
            self.db.execute("INSERT OR REPLACE INTO learning_state (key, value) VALUES ('_probe', '0')")
            self.db.execute("DELETE FROM learning_state WHERE key = '_probe'")

    def load_state(self) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self.db.execute("SELECT key, value FROM learning_state")}

    def save_state(self, state: dict[str, Any]) -> None:
        with self._write(durable=True):
            self.db.execute("DELETE FROM learning_state")
            self.db.executemany("INSERT INTO learning_state (key, value) VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in state.items()])


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), with the requested fsync level; reports the outcome of
    a store write to the store's ``write_error``."""

    def __init__(self, db: sqlite3.Connection, durable: bool, store: SQLiteInteractionStore | None = None) -> None:
        self.db, self.durable, self.store = db, durable, store

    def __enter__(self) -> None:
        try:
            self.db.execute("PRAGMA synchronous=FULL" if self.durable else "PRAGMA synchronous=NORMAL")
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._report(exc)
            raise

    def __exit__(self, exc_type: Any, exc: Any, _: Any) -> None:
        if exc_type is not None:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                self._report(exc)
            return
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as commit_error:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self._report(commit_error)
            raise
        self._report(None)

    def _report(self, exc: sqlite3.Error | None) -> None:
        if self.store is not None:
            self.store.write_error = None if exc is None else str(exc) or type(exc).__name__


def _to_row(i: Interaction) -> tuple:
    # Token ids as packed int32: a tenth of the JSON encoding's time and a third of its size.
    choices = json.dumps([{"text": c.text, "finish_reason": c.finish_reason, "n_tokens": len(c.token_ids)}
                          for c in i.choices], separators=(",", ":"))
    messages = None if i.messages is None else json.dumps(i.messages, separators=(",", ":"), default=str)
    return (i.id, i.created, i.endpoint, i.model, i.interaction_type, i.prompt, messages, choices,
            _pack([t for c in i.choices for t in c.token_ids]), i.prompt_tokens, i.completion_tokens, i.ttft_ms,
            i.total_ms, i.weight_version, json.dumps(i.sampling_params, separators=(",", ":"), default=str),
            i.api_key_hash, i.status_code, i.error, i.performance_feedback, i.user_satisfaction, i.quality_score,
            json.dumps(i.weight_versions or [i.weight_version]), i.tenant)


def _from_row(row: tuple) -> Interaction:
    (id_, created, endpoint, model, itype, prompt, messages, choices, token_ids, prompt_tokens, completion_tokens,
     ttft_ms, total_ms, weight_version, sampling_params, api_key_hash, status_code, error, performance_feedback,
     user_satisfaction, quality_score, weight_versions, tenant) = row
    tokens, start, parsed = _unpack(token_ids), 0, []
    for c in json.loads(choices):
        parsed.append(Choice(c["text"], tokens[start:start + c["n_tokens"]], c["finish_reason"]))
        start += c["n_tokens"]
    return Interaction(
        id=id_, endpoint=endpoint, model=model, interaction_type=itype, prompt=prompt, created=created,
        messages=None if messages is None else json.loads(messages), choices=parsed,
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, ttft_ms=ttft_ms, total_ms=total_ms,
        weight_version=weight_version, sampling_params=json.loads(sampling_params), api_key_hash=api_key_hash,
        status_code=status_code, error=error, performance_feedback=performance_feedback,
        user_satisfaction=user_satisfaction, quality_score=quality_score,
        weight_versions=json.loads(weight_versions) if weight_versions else [weight_version], tenant=tenant)


def _pack(token_ids: list[int]) -> bytes:
    packed = array("i", token_ids)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpack(blob: bytes) -> list[int]:
    unpacked = array("i")
    unpacked.frombytes(blob)
    if sys.byteorder == "big":
        unpacked.byteswap()
    return unpacked.tolist()
