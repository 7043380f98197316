"""Retention by bytes for the SQLite store: how much of learning.db the records use, and deleting the oldest
interactions (their feedback goes with them by ``ON DELETE CASCADE``) until they use at most a target.

Deleted rows free pages that SQLite reuses for new rows; the file is not shrunk (``VACUUM`` would rewrite it
whole), so with a byte bound it stops growing near the bound.
"""

from __future__ import annotations

import sqlite3

_BATCH = 256
# Bytes a row takes in the file, roughly: its texts and blobs, its feedback's texts, a fixed overhead for the rest.
_ROW_BYTES = ("(120 + length(CAST(id AS BLOB)) + ifnull(length(CAST(prompt AS BLOB)), 0) + "
              "ifnull(length(CAST(messages AS BLOB)), 0) + length(CAST(choices AS BLOB)) + length(token_ids) + "
              "length(CAST(sampling_params AS BLOB)) + ifnull(length(CAST(error AS BLOB)), 0) + ifnull((SELECT "
              "sum(80 + ifnull(length(CAST(corrected_response AS BLOB)), 0) + ifnull(length(CAST(comment AS BLOB)), 0))"
              " FROM feedback WHERE response_id = interactions.id), 0))")


def used_bytes(db: sqlite3.Connection) -> int:
    """Bytes of the database file in use: its pages less the free ones that new rows reuse."""
    pages, free, size = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count",
                                                                           "page_size"))
    return (pages - free) * size


def delete_oldest_until(db: sqlite3.Connection, target: int) -> int:
    """Inside a write transaction: delete the oldest interactions until the used bytes are at most ``target``;
    return how many. Row sizes pick how many to delete per round; the used pages decide when to stop."""
    deleted = 0
    excess = used_bytes(db) - target
    while excess > 0:
        rows = db.execute(f"SELECT rowid, {_ROW_BYTES} FROM interactions ORDER BY created LIMIT {_BATCH}").fetchall()
        doomed, total = [], 0
        for rowid, size in rows:
            doomed.append((rowid,))
            total += size
            if total >= excess:
                break
        if not doomed:
            break
        db.executemany("DELETE FROM interactions WHERE rowid = ?", doomed)
        deleted += len(doomed)
        excess = used_bytes(db) - target
    return deleted
