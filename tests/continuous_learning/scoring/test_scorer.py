import pytest

from aphrodite.continuous_learning.interaction import Choice, Interaction, interaction_from_finished
from aphrodite.continuous_learning.scoring.scorer import QualityScorer
from tests.continuous_learning.fakes import finished


def interaction(**kw) -> Interaction:
    return interaction_from_finished(finished(**kw))


class Predictor:
    def __init__(self, value: float, accuracy: float) -> None:
        self.value, self.accuracy = value, accuracy

    def predict(self, interaction: Interaction) -> float | None:
        return self.value


def test_clean_stop_scores_high_and_truncation_lower():
    scorer = QualityScorer()
    clean = scorer.score(interaction(finish_reason="stop"))
    truncated = scorer.score(interaction(finish_reason="length"))
    assert clean == pytest.approx(1.0)
    assert 0.6 <= truncated < clean


def test_errors_and_empty_output_score_zero():
    scorer = QualityScorer()
    assert scorer.score(interaction(status_code=500, error="boom")) == 0.0
    assert scorer.score(interaction(text="  ", tokens=[])) == 0.0


def test_repetition_and_latency_lower_the_score():
    scorer = QualityScorer()
    loop = scorer.score(interaction(tokens=[5, 6] * 20, text="la la " * 20))
    slow = scorer.score(interaction(total_s=30.0))
    assert loop < 0.5
    assert 0.6 < slow < 1.0


def test_explicit_feedback_dominates():
    scorer = QualityScorer()
    good = interaction()
    good.user_satisfaction = -1.0
    assert scorer.score(good) < 0.3  # a clean answer the user disliked is not eligible
    bad = interaction(finish_reason="length", tokens=[5, 6] * 20, text="la la " * 20)
    bad.user_satisfaction = 1.0
    assert scorer.score(bad) >= 0.8


def test_supplied_example_uses_its_performance_feedback():
    short = Interaction(id="manual-1", endpoint="/v1/learning/manual", choices=[Choice("An answer.")],
                        prompt="Q?", status_code=None, performance_feedback=0.6)
    parts = QualityScorer().explain(short)
    assert parts["finish"] is None and parts["latency"] is None and parts["implicit"] is None
    assert parts["score"] == pytest.approx(0.6)  # nothing implicit to judge: the given score stands
    long = Interaction(id="manual-2", endpoint="/v1/learning/manual", prompt="Q?", status_code=None,
                       choices=[Choice("Continuous learning lets a served model improve from the traffic it sees.")],
                       performance_feedback=0.9)
    assert QualityScorer().score(long) == pytest.approx(0.8 * 0.9 + 0.2 * 1.0)


@pytest.mark.parametrize("accuracy", [0.0, 0.5, 1.0])
def test_predictor_weight_grows_with_its_accuracy(accuracy):
    base = QualityScorer().score(interaction())
    scorer = QualityScorer(predictor=Predictor(0.0, accuracy))
    expected = base * (1 - 0.5 * accuracy)
    assert scorer.score(interaction()) == pytest.approx(expected)


def test_conversion_keeps_prompt_or_messages_not_both():
    i = interaction(tokens=list(range(100)))
    assert i.choices[0].token_ids == list(range(100)) and i.finish_reason == "stop"
    assert i.prompt == "What is the capital of France?" and i.messages is None
    chat = interaction(chat=True)
    assert chat.prompt is None and chat.messages[0]["role"] == "user"


def test_model_confidence_is_an_implicit_signal():
    import math

    scorer = QualityScorer()
    sure = interaction(mean_logprobs=[math.log(0.9)])
    unsure = interaction(mean_logprobs=[math.log(0.1)])
    assert sure.model_confidence == pytest.approx(0.9)
    parts = scorer.explain(unsure)
    assert parts["confidence"] == pytest.approx(0.1)
    assert scorer.score(unsure) < scorer.score(sure) < scorer.score(interaction())
    assert interaction(mean_logprobs=[None]).model_confidence is None
