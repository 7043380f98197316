from aphrodite.continuous_learning.learner.evidence import rated_worse


def test_clearly_worse_ratings_are_evidence_and_few_or_better_ones_are_not() -> None:
    parent = [1.0] * 18 + [-1.0] * 4
    assert rated_worse(parent, [1.0] * 8 + [-1.0] * 14).worse
    assert not rated_worse(parent, [1.0] * 20 + [-1.0] * 2).worse  # better is never worse
    assert not rated_worse(parent, [-1.0] * 10).worse  # too few ratings
    assert not rated_worse(parent, [1.0] * 16 + [-1.0] * 6).worse  # a small dip is noise
    assert not rated_worse([1.0] * 30, [1.0] * 30 + [0.0] * 50).worse  # neutral ratings do not count
