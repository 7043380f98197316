"""The store contract, run against every backend: SQLite, and PostgreSQL (a real server, see
tests/postgres_server.py). Backend-specific behaviour is tested in test_sqlite.py and test_postgres.py."""

import secrets
import sqlite3
import time

import psycopg
import pytest

from aphrodite.continuous_learning.interaction import interaction_from_finished
from aphrodite.continuous_learning.store.base import StoredFeedback
from aphrodite.continuous_learning.store.postgres import PostgresInteractionStore
from aphrodite.continuous_learning.store.sqlite import SQLiteInteractionStore
from tests.continuous_learning.fakes import finished
from tests.postgres_server import fresh_url

WRITE_ERRORS = (sqlite3.Error, psycopg.Error)


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request, tmp_path):
    """Opens a new store on this test's database (the same one each call: reopening sees what was written)."""
    if request.param == "sqlite":
        new = lambda **kw: SQLiteInteractionStore(str(tmp_path / "dir" / "learning.db"), **kw)  # noqa: E731
    else:
        url = fresh_url(request.getfixturevalue("postgres").url)
        new = lambda **kw: PostgresInteractionStore(url, **kw)  # noqa: E731
    opened = []

    def make(**kw):
        s = new(**kw)
        s.open()
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store):
    return make_store()


def scored(score: float = 0.9, **kw):
    i = interaction_from_finished(finished(**kw))
    i.quality_score = score
    return i


def test_round_trip_keeps_every_field(store):
    chat = scored(chat=True, tokens=[1, 2, 300000])
    assert store.add_interactions([chat]) == [chat]
    back = store.get_interaction(chat.id)
    assert back == chat
    assert store.get_interaction("cmpl-missing") is None


def test_existing_ids_are_kept_not_replaced(store):
    first = scored(0.9, response_id="cmpl-a")
    again = scored(0.1, response_id="cmpl-a")
    assert store.add_interactions([first]) == [first]
    assert store.add_interactions([again]) == []
    assert store.get_interaction("cmpl-a").quality_score == 0.9


def test_feedback_inserts_an_interaction_not_stored_yet(store):
    i = scored(0.3, response_id="cmpl-late")
    i.user_satisfaction = 1.0
    fb = StoredFeedback("fb-1", i.id, 1.0, "A better answer.", "thanks", time.time())
    assert store.add_feedback(fb, i) is True
    assert store.get_interaction(i.id).user_satisfaction == 1.0
    assert store.feedback_for(i.id) == [fb]
    assert store.add_feedback(StoredFeedback("fb-2", i.id, -1.0, None, None, time.time()), i) is False
    assert store.counts(0.6).feedback == 2


def test_counts_and_eligible(store):
    store.add_interactions([scored(0.9), scored(0.2), scored(0.6)])
    counts = store.counts(0.6)
    assert (counts.interactions, counts.eligible) == (3, 2)
    assert sorted(i.quality_score for i in store.eligible(0.6, 10)) == [0.6, 0.9]


def test_cleanup_by_age_and_rows_deletes_feedback_too(store):
    now = time.time()
    old = scored(created=now - 100 * 86400)
    rows = [scored(created=now - k) for k in range(5)]
    store.add_interactions([old, *rows])
    store.add_feedback(StoredFeedback("fb-old", old.id, 1.0, None, None, now), old)
    assert store.cleanup(max_interactions=3, max_age_s=30 * 86400, now=now) == 3
    assert store.get_interaction(old.id) is None and store.feedback_for(old.id) == []
    kept = {i.id for i in store.eligible(0.0, 10)}
    assert kept == {r.id for r in rows[:3]}  # the newest three


def test_state_and_data_survive_reopen(make_store):
    s = make_store()
    s.open()
    i = scored()
    s.add_interactions([i])
    s.save_state({"enabled": False, "learning_steps": 3})
    s.close()
    s.open()
    assert s.get_interaction(i.id) == i and s.load_state() == {"enabled": False, "learning_steps": 3}
    s.close()


def test_delete_removes_the_interaction_and_its_feedback(store):
    gone, kept = scored(), scored()
    store.add_interactions([gone, kept])
    store.add_feedback(StoredFeedback("fb-1", gone.id, -1.0, "Better.", "meh", time.time()), gone)
    assert store.delete_interactions([gone.id, "cmpl-unknown"]) == [gone.id]
    assert store.get_interaction(gone.id) is None and store.feedback_for(gone.id) == []
    assert store.counts(0.0).feedback == 0
    assert store.get_interaction(kept.id) is not None
    assert store.delete_interactions([gone.id]) == []


def test_a_failing_write_changes_nothing_and_is_reported_until_writes_succeed(store):
    first = scored()
    store.add_interactions([first])
    store.fail_writes = True
    with pytest.raises(WRITE_ERRORS, match="disk is full"):
        store.add_interactions([scored()])
    assert store.write_error == "database or disk is full"
    with pytest.raises(WRITE_ERRORS):
        store.save_state({"paused": True})
    with pytest.raises(WRITE_ERRORS):
        store.probe_write()
    assert store.load_state() == {} and store.counts(0.0).interactions == 1
    store.fail_writes = False
    store.probe_write()
    assert store.write_error is None and store.load_state() == {}


def test_the_fault_file_makes_writes_fail_while_it_exists(make_store, tmp_path, monkeypatch):
    fault = tmp_path / "disk-full"
    monkeypatch.setenv("APHRODITE_LEARNING_STORE_FAULT_FILE", str(fault))
    s = make_store()
    s.add_interactions([scored()])
    fault.touch()
    with pytest.raises(WRITE_ERRORS, match="disk is full"):
        s.add_interactions([scored()])
    fault.unlink()
    s.add_interactions([scored()])
    assert s.write_error is None and s.counts(0.0).interactions == 2
    s.close()


def test_every_version_a_response_saw_is_stored(store):
    straddled = scored(weight_version=2, weight_versions=[2, 3])
    store.add_interactions([straddled])
    back = store.get_interaction(straddled.id)
    assert back.weight_version == 2 and back.weight_versions == [2, 3]


def test_ratings_by_version(store):
    a, b = scored(weight_version=1), scored(weight_version=2)
    store.add_interactions([a, b])
    store.add_feedback(StoredFeedback("fb-1", a.id, 0.5, None, None, time.time()), a)
    store.add_feedback(StoredFeedback("fb-2", b.id, -1.0, None, None, time.time()), b)
    assert store.ratings_by_version([1, 2, 3]) == {1: [0.5], 2: [-1.0], 3: []}


def test_live_outcomes_and_quality_by_version_for_the_canary(store):
    """A rating counts as given; a correction counts -1 whatever its rating; ``since`` bounds by response time."""
    a, b = scored(0.8, weight_version=1), scored(0.6, weight_version=1)
    c, d = scored(0.2, weight_version=2), scored(0.4, weight_version=2)
    store.add_interactions([a, b, c, d])
    now = time.time()
    store.add_feedback(StoredFeedback("fb-a", a.id, 0.5, None, None, now), a)
    store.add_feedback(StoredFeedback("fb-b", b.id, 1.0, "a better answer", None, now), b)
    store.add_feedback(StoredFeedback("fb-c", c.id, -1.0, None, None, now), c)
    outcomes = store.outcomes_by_version([1, 2, 3])
    assert sorted(outcomes[1]) == [-1.0, 0.5] and outcomes[2] == [-1.0] and outcomes[3] == []
    assert store.outcomes_by_version([1, 2], since=now + 3600) == {1: [], 2: []}
    quality = store.quality_by_version([1, 2])
    assert quality[1][0] == pytest.approx(0.7) and quality[1][1] == 2
    assert quality[2][0] == pytest.approx(0.3) and quality[2][1] == 2


# -- training signals (learner's signal policy) ------------------------------------------------------------------
def test_training_signals_join_the_latest_feedback_and_skip_unrated_traffic(store):
    from aphrodite.continuous_learning.interaction import supplied_interaction

    now = time.time()
    unrated = scored(0.9, response_id="cmpl-unrated", created=now - 50)
    rated = scored(0.9, response_id="cmpl-rated", created=now - 40)
    old = scored(0.9, response_id="cmpl-old", created=now - 1000)
    curated = supplied_interaction("Q?", "A.", 0.9, "manual", 0, "m")
    store.add_interactions([unrated, rated, old, curated])
    rated.user_satisfaction = -1.0
    store.add_feedback(StoredFeedback("fb-1", rated.id, 1.0, None, None, now - 30), rated)
    store.add_feedback(StoredFeedback("fb-2", rated.id, -1.0, "Better.", None, now - 20), rated)
    old.user_satisfaction = 1.0
    store.add_feedback(StoredFeedback("fb-3", old.id, 1.0, None, None, now - 10), old)  # new feedback, old answer

    signals = store.training_signals(now - 100, 10)
    assert [s.interaction.id for s in signals] == ["cmpl-rated", "cmpl-old", curated.id]  # by last change
    assert signals[0].feedback.id == "fb-2" and signals[0].feedback.corrected_response == "Better."
    assert signals[0].created == pytest.approx(now - 20) and signals[2].feedback is None
    with_unrated = store.training_signals(now - 100, 10, unrated_threshold=0.6)
    assert "cmpl-unrated" in [s.interaction.id for s in with_unrated]
    assert "cmpl-unrated" not in [s.interaction.id for s in store.training_signals(now - 100, 10, 0.95)]
    assert [s.interaction.id for s in store.training_signals(now - 15, 10)] == ["cmpl-old", curated.id]
    assert len(store.training_signals(now - 100, 1)) == 1


def test_training_signals_belong_to_one_lineage_the_base_models_or_a_tenants(store):
    """Per-tenant adapters: feedback on a tenant's response trains that tenant only; the base lineage sees
    only interactions of no tenant."""
    from aphrodite.continuous_learning.interaction import supplied_interaction

    now = time.time()
    base, acme, globex = (scored(response_id=f"cmpl-{n}", created=now - 30) for n in ("base", "acme", "globex"))
    acme.tenant, globex.tenant = "acme", "globex"
    curated = supplied_interaction("Q?", "A.", 0.9, "manual", 0, "m:acme", tenant="acme")
    store.add_interactions([base, acme, globex, curated])
    for i in (base, acme, globex):
        i.user_satisfaction = 1.0
        store.add_feedback(StoredFeedback(f"fb-{i.id}", i.id, 1.0, None, None, now - 10), i)
    assert store.get_interaction(acme.id).tenant == "acme" and store.get_interaction(base.id).tenant is None
    ids = lambda tenant: [s.interaction.id for s in store.training_signals(now - 100, 10, tenant=tenant)]  # noqa: E731
    assert ids(None) == ["cmpl-base"]
    assert sorted(ids("acme")) == sorted(["cmpl-acme", curated.id]) and ids("globex") == ["cmpl-globex"]
    assert ids("nobody") == []


def test_admissions_record_the_rule_and_go_with_their_interaction(store):
    kept, gone = scored(), scored()
    store.add_interactions([kept, gone])
    store.record_admissions([(kept.id, "curated"), (gone.id, "rating+"), ("cmpl-unknown", "rating-")], time.time())
    store.record_admissions([(kept.id, "correction")], time.time())  # the latest admission is kept
    assert (store.admitted_by(kept.id), store.admitted_by(gone.id)) == ("correction", "rating+")
    assert store.admitted_by("cmpl-unknown") is None  # nothing recorded for an interaction the store lacks
    store.delete_interactions([gone.id])
    assert store.admitted_by(gone.id) is None


def test_cleanup_bounds_the_bytes_the_records_take(make_store):
    s = make_store(max_bytes=400_000)
    now = time.time()
    # random text (PostgreSQL compresses what it can): about 1 MB
    rows = [scored(text=secrets.token_urlsafe(15_000), created=now - 1000 + k) for k in range(50)]
    s.add_interactions(rows)
    assert s.used_bytes() > 400_000
    deleted = s.cleanup(max_interactions=1_000, max_age_s=0, now=now)
    assert s.used_bytes() <= 400_000 and 10 <= deleted < 50
    kept = {i.id for i in s.eligible(0.0, 100)}
    assert kept == {r.id for r in rows[deleted:]}  # the newest are kept
    for k in range(3):  # more, each write followed by a trim as the writer does
        s.add_interactions([scored(text=secrets.token_urlsafe(15_000), created=now + k) for _ in range(10)])
        s.trim_bytes()
        assert s.used_bytes() <= 400_000


def test_recent_interactions_newest_first_with_latest_feedback(store):
    old, new = scored(0.4, response_id="cmpl-old"), scored(0.8, response_id="cmpl-new")
    old.created, new.created = 100.0, 200.0
    store.add_interactions([old, new])
    store.add_feedback(StoredFeedback("fb-1", old.id, -1.0, None, "bad", 300.0), old)
    store.add_feedback(StoredFeedback("fb-2", old.id, 0.5, "Better.", None, 400.0), old)
    recent = store.recent_interactions(10)
    assert [s.interaction.id for s in recent] == ["cmpl-new", "cmpl-old"]
    assert recent[0].feedback is None and recent[1].feedback.id == "fb-2"
    assert [s.interaction.id for s in store.recent_interactions(1)] == ["cmpl-new"]


def test_feedback_series_counts_and_averages_by_bucket(store):
    i = scored(0.5, response_id="cmpl-rated")
    store.add_interactions([i])
    for k, (t, rating) in enumerate([(1000.0, 1.0), (1010.0, 0.0), (1130.0, -1.0), (900.0, 1.0)]):
        store.add_feedback(StoredFeedback(f"fb-{k}", i.id, rating, None, None, t), i)
    assert store.feedback_series(1000.0, 60.0) == [(1000.0, 2, 0.5), (1120.0, 1, -1.0)]
