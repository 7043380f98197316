"""PostgreSQL-specific store behaviour (the shared contract is in test_store.py): versioned migrations shared by
replicas, errors that say what to fix, and writes failing and recovering while the server is away."""

import threading
import time

import psycopg
import pytest

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.interaction import interaction_from_finished
from aphrodite.continuous_learning.store.base import StoreError
from aphrodite.continuous_learning.store.factory import create_store
from aphrodite.continuous_learning.store.postgres import SCHEMA_VERSION, PostgresInteractionStore
from tests.continuous_learning.fakes import finished
from tests.postgres_server import fresh_url


@pytest.fixture
def url(postgres):
    return fresh_url(postgres.url)


def test_the_store_flag_picks_the_backend(url, tmp_path):
    assert isinstance(create_store(ServerSideConfig(store=url)), PostgresInteractionStore)
    assert type(create_store(ServerSideConfig(learning_dir=str(tmp_path)))).__name__ == "SQLiteInteractionStore"
    with pytest.raises(ValueError, match="--learning-store"):
        ServerSideConfig(store="mysql://x")


def test_replicas_starting_together_migrate_once(url):
    stores = [PostgresInteractionStore(url) for _ in range(4)]
    errors = []

    def open_one(s):
        try:
            s.open()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM aphrodite_schema").fetchall() == [(SCHEMA_VERSION,)]
    for s in stores:
        s.close()


def test_newer_schema_is_refused_with_advice(url):
    s = PostgresInteractionStore(url)
    s.open()
    s.close()
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE aphrodite_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer.*upgrade Aphrodite"):
        PostgresInteractionStore(url).open()


def test_an_unreachable_server_is_refused_with_advice_and_no_password():
    s = PostgresInteractionStore("postgresql://learner:s3cret@127.0.0.1:9/learning",
                                 open_timeout_s=1.0)
    with pytest.raises(StoreError, match="PostgreSQL is running") as info:
        s.open()
    assert "s3cret" not in str(info.value)


def test_writes_fail_while_the_server_is_away_and_succeed_after(postgres, url):
    if postgres.stop is None:
        pytest.skip("an external PostgreSQL ($APHRODITE_TEST_POSTGRES_URL) is not stopped by tests")
    s = PostgresInteractionStore(url)
    s.open()
    first = interaction_from_finished(finished())
    s.add_interactions([first])
    postgres.stop()
    try:
        with pytest.raises(Exception):
            s.add_interactions([interaction_from_finished(finished())])
        assert s.write_error is not None
    finally:
        postgres.start()
    deadline = time.monotonic() + 20
    while True:  # the pool replaces its broken connections
        try:
            s.probe_write()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert s.write_error is None
    s.add_interactions([interaction_from_finished(finished())])
    assert s.counts(0.0).interactions == 2 and s.get_interaction(first.id) == first
    s.close()
