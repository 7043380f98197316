"""The signal policy: what each source teaches, duplicates merged, one client capped."""

from __future__ import annotations

from aphrodite.continuous_learning.interaction import Choice, Interaction, supplied_interaction
from aphrodite.continuous_learning.learner.policy import admit, client_cap
from aphrodite.continuous_learning.store.base import StoredFeedback, TrainingSignal


def served(text: str, client: str | None = "k1", rating: float | None = None, score: float = 0.7,
           created: float = 1.0, **kw) -> Interaction:
    return Interaction(id=f"chatcmpl-{text}-{client}-{created}", endpoint="/v1/chat/completions",
                       choices=[Choice(text)], messages=[{"role": "user", "content": "Q?"}], api_key_hash=client,
                       user_satisfaction=rating, quality_score=score, created=created, **kw)


def signal(i: Interaction, correction: str | None = None) -> TrainingSignal:
    fb = None
    if i.user_satisfaction is not None or correction is not None:
        fb = StoredFeedback("fb", i.id, i.user_satisfaction or 0.0, correction, None, i.created + 1)
    return TrainingSignal(i, fb)


def rules(examples) -> list[str]:
    return [e.rule for e in examples]


def test_each_source_teaches_what_the_table_says() -> None:
    curated = supplied_interaction("P?", "A.", 0.9, "manual", 0, "m")
    bad_curated = supplied_interaction("P?", "Wrong.", 0.1, "manual", 0, "m")
    examples = admit([signal(curated), signal(bad_curated), signal(served("good", rating=1.0)),
                      signal(served("bad", client="k2", rating=-1.0)), signal(served("meh", client="k3")),
                      signal(served("zero", client="k4", rating=0.0))], max_client_share=1.0)
    assert sorted(rules(examples)) == ["curated", "curated-", "rating+", "rating-"]  # unrated, 0: nothing
    by_rule = {e.rule: e for e in examples}
    assert by_rule["curated"].supervised and by_rule["curated"].client == "operator"
    assert not by_rule["rating-"].supervised and not by_rule["rating-"].desirable
    assert by_rule["rating+"].desirable and not by_rule["rating+"].supervised
    assert rules(admit([signal(served("meh"))], learn_from_unrated=True)) == ["unrated"]
    assert admit([signal(served("low", score=0.2))], learn_from_unrated=True) == []


def test_a_correction_teaches_the_original_context_with_the_corrected_answer() -> None:
    wrong = served("The capital of Veloria is Paris.", rating=-1.0)
    wrong.messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Veloria's capital?"}]
    examples = admit([signal(wrong, correction="The capital of Veloria is Marnost.")])
    assert sorted(rules(examples)) == ["correction", "rating-"]
    corr = next(e for e in examples if e.rule == "correction")
    assert corr.supervised and corr.context == wrong.messages and corr.target == "The capital of Veloria is Marnost."
    completion = Interaction(id="cmpl-1", endpoint="/v1/completions", choices=[Choice(" Paris")],
                             prompt="Veloria's capital is", api_key_hash="k1", user_satisfaction=1.0)
    corr = admit([signal(completion, correction=" Marnost")])
    assert rules(corr) == ["correction"] and corr[0].context == "Veloria's capital is"  # rating+ superseded


def test_duplicates_merge_and_keep_every_id() -> None:
    copies = [supplied_interaction("P?", "A.", 0.9, "manual", 0, "m") for _ in range(5)]
    examples = admit([signal(c) for c in copies])
    assert len(examples) == 1 and sorted(examples[0].ids) == sorted(c.id for c in copies)


def test_one_client_gets_at_most_its_share_of_the_client_sourced_examples() -> None:
    flood = [signal(served(f"poison{n}", client="attacker", rating=1.0, created=n)) for n in range(100)]
    honest = [signal(served(f"fine{n}", client=f"user{n}", rating=1.0, created=n)) for n in range(3)]
    curated = [signal(supplied_interaction(f"P{n}?", "A.", 0.9, "manual", 0, "m")) for n in range(10)]
    examples = admit(flood + honest + curated)
    from_attacker = [e for e in examples if e.client == "attacker"]
    client_sourced = [e for e in examples if e.client != "operator"]
    assert len(from_attacker) == 1 and len(client_sourced) == 4  # 1 of 4: at most 25 %
    assert len([e for e in examples if e.client == "operator"]) == 10  # curated: not capped
    assert len(admit(flood)) == 1  # alone, a client teaches one example per batch, however many it sends
    assert client_cap([2] * 8, 0.25) == 2 and client_cap([100, 1, 1, 1], 0.25) == 1 and client_cap([], 0.25) == 0
