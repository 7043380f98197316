import sqlite3
import time

import pytest

from aphrodite.continuous_learning.interaction import interaction_from_finished
from aphrodite.continuous_learning.store.sqlite import SCHEMA_VERSION, SQLiteInteractionStore
from aphrodite.continuous_learning.store.base import StoreError
from tests.continuous_learning.fakes import finished


@pytest.fixture
def store(tmp_path):
    s = SQLiteInteractionStore(str(tmp_path / "dir" / "learning.db"))
    s.open()
    yield s
    s.close()


def scored(score: float = 0.9, **kw):
    i = interaction_from_finished(finished(**kw))
    i.quality_score = score
    return i


def test_wal_mode_and_schema_version(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_store_of_the_previous_schema_is_migrated_keeping_its_rows(tmp_path):
    """The tenant column (per-tenant adapters) is added to a database written before it; old rows have none."""
    from aphrodite.continuous_learning.store import sqlite as backend

    path = str(tmp_path / "learning.db")
    old = SQLiteInteractionStore(path)
    latest = backend._MIGRATIONS
    backend._MIGRATIONS, backend.SCHEMA_VERSION = latest[:-1], len(latest) - 1
    try:
        old._migrate(sqlite3.connect(path, isolation_level=None))
    finally:
        backend._MIGRATIONS, backend.SCHEMA_VERSION = latest, len(latest)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO interactions (id, created, endpoint, model, interaction_type, choices, token_ids, "
               "prompt_tokens, completion_tokens, weight_version, sampling_params) VALUES ('cmpl-old', 1, "
               "'/v1/completions', 'm', 'api', '[]', x'', 0, 0, 0, '{}')")
    db.commit()
    db.close()
    store = SQLiteInteractionStore(path)
    store.open()
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.get_interaction("cmpl-old").tenant is None
    store.close()


def test_newer_schema_is_refused_with_advice(tmp_path):
    path = tmp_path / "learning.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer.*upgrade Aphrodite"):
        SQLiteInteractionStore(str(path)).open()


def test_not_a_database_is_refused_with_advice(tmp_path):
    path = tmp_path / "learning.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="--learning-dir"):
        SQLiteInteractionStore(str(path)).open()


def test_the_learning_dir_is_private_to_the_server_user(tmp_path):
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    (old / "learning.db-wal").write_bytes(b"")  # left world-readable by an older server
    (old / "learning.db-wal").chmod(0o644)
    for path in (tmp_path / "new" / "deeper" / "learning.db", old / "learning.db"):
        s = SQLiteInteractionStore(str(path))
        s.open()
        s.add_interactions([scored()])  # the WAL and shared-memory files exist now
        files = [path, path.with_name("learning.db-wal"), path.with_name("learning.db-shm")]
        assert [f.stat().st_mode & 0o777 for f in files] == [0o600] * 3
        assert path.parent.stat().st_mode & 0o777 == 0o700
        s.close()


def test_cleanup_bounds_the_bytes_the_records_take(tmp_path):
    s = SQLiteInteractionStore(str(tmp_path / "learning.db"), max_bytes=400_000)
    s.open()
    now = time.time()
    rows = [scored(text="x" * 20_000, created=now - 1000 + k) for k in range(50)]  # about 1 MB
    s.add_interactions(rows)
    assert s.used_bytes() > 900_000
    deleted = s.cleanup(max_interactions=1_000, max_age_s=0, now=now)
    assert s.used_bytes() <= 400_000 and 25 <= deleted < 50
    kept = {i.id for i in s.eligible(0.0, 100)}
    assert kept == {r.id for r in rows[deleted:]}  # the newest are kept
    s.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = (tmp_path / "learning.db").stat().st_size
    for k in range(5):  # 1 MB more, in rounds, each followed by clean-up as the background step does
        s.add_interactions([scored(text="y" * 20_000, created=now + k) for _ in range(10)])
        s.cleanup(max_interactions=1_000, max_age_s=0, now=now)
        assert s.used_bytes() <= 400_000
    s.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert (tmp_path / "learning.db").stat().st_size <= size  # freed pages are reused: the file does not grow
    s.close()

