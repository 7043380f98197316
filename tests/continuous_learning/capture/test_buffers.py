"""``RecentInteractions`` stays within its count and byte bounds."""

from aphrodite.continuous_learning.capture.buffers import RecentInteractions
from aphrodite.continuous_learning.interaction import interaction_from_finished
from tests.continuous_learning.fakes import finished


def test_bounded_in_bytes_as_well_as_count():
    recent = RecentInteractions(capacity=1_000, max_bytes=100_000)
    items = [interaction_from_finished(finished(text="x" * 30_000)) for _ in range(10)]
    for i in items:
        recent.add(i)
    assert recent.approx_bytes <= 100_000 and len(recent) == 3
    assert [i.id for i in recent] == [i.id for i in items[-3:]]  # the oldest go first
    assert recent.remove(items[-1].id) is items[-1] and recent.remove(items[-1].id) is None
    assert len(recent) == 2 and recent.approx_bytes == sum(i.approx_bytes() for i in items[-3:-1])


def test_a_record_larger_than_the_bound_is_not_held():
    recent = RecentInteractions(capacity=10, max_bytes=1_000)
    recent.add(interaction_from_finished(finished(text="x" * 5_000)))
    assert len(recent) == 0 and recent.approx_bytes == 0
