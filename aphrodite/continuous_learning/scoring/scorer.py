"""Quality score in [0, 1] per interaction: explicit feedback dominates, implicit signals fill in.

    implicit = weighted mean of the signals that apply (finish reason, repetition, latency, confidence);
               0 when the request errored or produced nothing; none when no signal applies
    implicit = (1 - a) * implicit + a * prediction      a = predictor_max_weight * predictor.accuracy
    score    = w * explicit + (1 - w) * implicit          both present (w = explicit_weight)
    score    = explicit, or implicit, when only one is present; 0.5 when neither is

``explicit`` is the mean of the supplied ``performance_feedback`` (in [0, 1]) and the latest user
satisfaction mapped from [-1, 1] to [0, 1]. See docs/continuous_learning.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aphrodite.continuous_learning.interaction import Interaction

# Repetition: fraction of distinct word 3-grams at or below which the text counts as fully degenerate, and at
# or above which it counts as clean; linear in between. Texts shorter than _MIN_WORDS are not judged. Words,
# not token ids: the score then needs only the text, which stays in memory after the token ids are released.
_DEGENERATE, _CLEAN, _MIN_WORDS = 0.3, 0.8, 8
_FINISH_SCORES = {"stop": 1.0, "eos": 1.0, "tool_calls": 1.0, "length": 0.5, "abort": 0.1, "cancelled": 0.1}


class QualityPredictor(Protocol):
    """A learned quality estimate (e.g. a reservoir readout on hidden states) and how much to trust it."""

    @property
    def accuracy(self) -> float:
        """Measured agreement with explicit feedback, in [0, 1]; 0 gives the prediction no weight."""
        ...

    def predict(self, interaction: Interaction) -> float | None:
        """Predicted quality in [0, 1], or None when there is nothing to predict from. Runs off the event loop."""
        ...


@dataclass(frozen=True)
class ScoringWeights:
    """Weights of the quality score's parts."""

    explicit_weight: float = 0.8
    """Share of explicit feedback in the score when there is any."""
    finish_weight: float = 1.0
    """Weight of the finish-reason signal among the implicit signals."""
    repetition_weight: float = 2.0
    """Weight of the repetition signal among the implicit signals (a degenerate loop outweighs a clean stop)."""
    latency_weight: float = 0.25
    """Weight of the latency signal among the implicit signals (slow is a weak hint of trouble)."""
    confidence_weight: float = 2.0
    """Weight of the model's own confidence (geometric mean probability of the sampled tokens) among the
    implicit signals; it separated right from wrong answers best of all signals measured (AUC 0.93, see
    docs/benchmarks.md)."""
    latency_target_ms_per_token: float = 100.0
    """Decode time per generated token at or under which latency scores 1; slower scores target/actual."""
    predictor_max_weight: float = 0.5
    """Share of the implicit part a perfectly accurate predictor would take."""

    def __post_init__(self) -> None:
        for name in ("explicit_weight", "predictor_max_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)!r}")
        if self.latency_target_ms_per_token <= 0:
            raise ValueError("latency_target_ms_per_token must be > 0")


class QualityScorer:
    """Scores interactions; pure and thread-safe (runs on the store writer thread)."""

    def __init__(self, weights: ScoringWeights | None = None, predictor: QualityPredictor | None = None) -> None:
        self.weights = weights or ScoringWeights()
        self.predictor = predictor

    def set_predictor(self, predictor: QualityPredictor | None) -> None:
        """Plug in (or remove) a learned predictor; its weight follows its ``accuracy``."""
        self.predictor = predictor

    def score(self, interaction: Interaction) -> float:
        """The quality score in [0, 1]."""
        return self.explain(interaction)["score"]  # type: ignore[return-value]

    def explain(self, interaction: Interaction) -> dict[str, float | None]:
        """The score and each part that went into it."""
        w = self.weights
        parts: dict[str, float | None] = {
            "finish": finish_signal(interaction),
            "repetition": repetition_signal(interaction),
            "latency": latency_signal(interaction, w.latency_target_ms_per_token),
            "confidence": confidence_signal(interaction),
        }
        if interaction.error is not None or (interaction.status_code or 200) >= 400 or not _has_output(interaction):
            implicit: float | None = 0.0
        else:
            total = value = 0.0
            for signal, weight in ((parts["finish"], w.finish_weight), (parts["repetition"], w.repetition_weight),
                                   (parts["latency"], w.latency_weight),
                                   (parts["confidence"], w.confidence_weight)):
                if signal is not None and weight > 0:
                    total += weight
                    value += weight * signal
            implicit = value / total if total else None
        parts["prediction"] = prediction = self._predict(interaction)
        if prediction is not None:
            a = w.predictor_max_weight * _clamp(self.predictor.accuracy)  # type: ignore[union-attr]
            implicit = prediction if implicit is None else (1.0 - a) * implicit + a * prediction
        parts["implicit"] = implicit
        parts["explicit"] = explicit = explicit_signal(interaction)
        if explicit is not None and implicit is not None:
            score = w.explicit_weight * explicit + (1.0 - w.explicit_weight) * implicit
        else:
            score = explicit if explicit is not None else implicit if implicit is not None else 0.5
        parts["score"] = _clamp(score)
        return parts

    def _predict(self, interaction: Interaction) -> float | None:
        if self.predictor is None:
            return None
        value = self.predictor.predict(interaction)
        return None if value is None else _clamp(value)


def explicit_signal(interaction: Interaction) -> float | None:
    """Mean of the explicit feedback in [0, 1], or None when there is none."""
    values = [v for v in (interaction.performance_feedback,
                          None if interaction.user_satisfaction is None else (interaction.user_satisfaction + 1) / 2)
              if v is not None]
    return _clamp(sum(values) / len(values)) if values else None


def finish_signal(interaction: Interaction) -> float | None:
    """1 for a natural stop, 0.5 for a truncation at max_tokens, 0.1 for an abort; None when unknown."""
    reason = interaction.finish_reason
    return None if reason is None else _FINISH_SCORES.get(reason, 1.0)


def repetition_signal(interaction: Interaction) -> float | None:
    """1 for varied text, 0 for a degenerate loop, from the share of distinct word 3-grams in the first choice."""
    words = interaction.completion.split()
    if len(words) < _MIN_WORDS:
        return None
    distinct = len(set(zip(words, words[1:], words[2:]))) / (len(words) - 2)
    return _clamp((distinct - _DEGENERATE) / (_CLEAN - _DEGENERATE))


def confidence_signal(interaction: Interaction) -> float | None:
    """The model's confidence in its answer, exp(mean log-probability of the sampled tokens); None if unknown."""
    c = interaction.model_confidence
    return None if c is None else _clamp(c)


def latency_signal(interaction: Interaction, target_ms_per_token: float) -> float | None:
    """1 when decoding ran at or under the target time per token, else target/actual; None when unknown."""
    if interaction.total_ms is None or interaction.completion_tokens <= 0:
        return None
    decode_ms = interaction.total_ms - (interaction.ttft_ms or 0.0)
    per_token = max(decode_ms, 0.0) / interaction.completion_tokens
    return 1.0 if per_token <= target_ms_per_token else target_ms_per_token / per_token


def _has_output(interaction: Interaction) -> bool:
    return any(c.text.strip() for c in interaction.choices)


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, float(x)))
