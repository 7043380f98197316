"""Refusal backoff: exponential waits, a promotion resets them, an unchanged batch is set aside."""

from aphrodite.continuous_learning.learner.backoff import RefusalBackoff, fingerprint


def test_refusals_back_off_exponentially_and_a_promotion_resets() -> None:
    b = RefusalBackoff(base_s=60.0, max_s=1000.0)
    assert b.ready(now=0.0)
    b.refused(["a"], "forgets", now=0.0)
    assert not b.ready(now=119.0) and b.ready(now=120.0)
    b.refused(["b"], "forgets", now=200.0)
    assert b.backoff_until == 440.0
    for _ in range(5):
        b.refused(["c", str(_)], "x", now=0.0)
    assert b.backoff_until == 1000.0  # capped
    b.promoted()
    assert b.ready(now=0.0) and b.report()["refusals"] == 7 and b.report()["last_refusal_reason"] == "x"


def test_a_batch_refused_unchanged_three_times_is_set_aside() -> None:
    b = RefusalBackoff(base_s=1.0, give_up_after=3)
    assert not b.refused(["x", "y"], "r") and not b.refused(["y", "x"], "r")  # order does not matter
    assert b.refused(["x", "y"], "r") and b.set_aside == {"x", "y"}
    assert fingerprint(["a", "b"]) == fingerprint(["b", "a"]) != fingerprint(["a"])
