import json
import stat

import pytest

from aphrodite.continuous_learning.learner.timeline import Timeline


def test_events_survive_a_reopen_and_the_file_is_private(tmp_path):
    path = tmp_path / "versions" / "timeline.jsonl"
    t = Timeline(path)
    t.record("promoted", 1, parent=0, reason="passed the gate")
    t.record("refused", None, parent=1, reason="held-out perplexity rises")
    t.record("served", 0, previous=1, reason="operator rollback")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Timeline(path)
    again.open()
    assert [(e["kind"], e["version"]) for e in again.events()] == [("promoted", 1), ("refused", None), ("served", 0)]
    assert again.events(1)[0]["previous"] == 1 and again.events(0) == []


def test_a_torn_last_line_is_ignored_and_the_file_trimmed_to_keep(tmp_path):
    path = tmp_path / "timeline.jsonl"
    t = Timeline(path, keep=3)
    for v in range(1, 6):
        t.record("promoted", v, parent=v - 1)
    with open(path, "a") as f:
        f.write('{"time": 1, "kind": "prom')  # a crash in the middle of an append
    again = Timeline(path, keep=3)
    again.open()
    assert [e["version"] for e in again.events()] == [3, 4, 5]
    assert [json.loads(line)["version"] for line in path.read_text().splitlines()] == [3, 4, 5]
    with pytest.raises(ValueError):
        again.record("exploded", 1)


def test_an_unwritable_file_keeps_the_event_in_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    t = Timeline(blocker / "timeline.jsonl")  # its directory is a file: every write fails
    t.record("served", 2, previous=3, reason="reset")
    assert [e["version"] for e in t.events()] == [2]
