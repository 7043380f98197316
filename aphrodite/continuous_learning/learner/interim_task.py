"""Interim form of contract 5 (delete when ``learner/task.py`` lands): a picklable ``TrainingJob`` in, a
``TrainingResult`` out, and ``train_and_gate`` (the earlier learner's training and evaluation as a pure
function of the served model's base weights and the job, so it can run in the worker process).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from aphrodite.continuous_learning.learner.trainer import Example, attach, mean_nll, train_lora, trainable_view
from aphrodite.engine.weights import LoRADelta
from aphrodite.modeling.llama import LlamaForCausalLM


@dataclass
class TrainingJob:
    """Everything a learning task needs besides the base weights."""

    examples: list[Example]
    replay: list[Example]
    """Known texts rehearsed beside the examples (experience replay)."""
    anchors: list[Example]
    """Known texts never trained on: the candidate's loss there may rise by at most ``max_anchor_regression``."""
    start: dict[str, LoRADelta]
    """Deltas of the parent version (the one serving when the task started)."""
    targets: list[str]
    rank: int
    alpha: float
    lr: float
    steps: int
    seed: int = 0
    max_anchor_regression: float = 0.02


@dataclass
class TrainingResult:
    """The candidate's deltas and the gate's verdict."""

    deltas: dict[str, LoRADelta]
    accepted: bool
    reason: str
    report: dict[str, Any] = field(default_factory=dict)
    """Losses before and after (batch, anchors), examples, seconds."""


def train_and_gate(model: LlamaForCausalLM, job: TrainingJob) -> TrainingResult:
    """Train from ``job.start`` on a view sharing ``model``'s base weights (never written), then gate."""
    t0 = time.monotonic()
    view = trainable_view(model)
    attach(view, job.start)
    before = mean_nll(view, job.examples), mean_nll(view, job.anchors)
    deltas = train_lora(view, job.examples + job.replay, job.start, sorted(job.start) or job.targets, job.rank,
                        job.alpha, job.lr, job.steps, seed=job.seed)
    attach(view, deltas)
    after = mean_nll(view, job.examples), mean_nll(view, job.anchors)
    report = {"batch_before": before[0], "batch_after": after[0], "anchor_before": before[1],
              "anchor_after": after[1], "examples": len(job.examples), "seconds": time.monotonic() - t0}
    limit = before[1] + math.log1p(job.max_anchor_regression)  # perplexity x (1 + r)
    if not after[0] < before[0]:
        return TrainingResult(deltas, False, f"the candidate does not fit its batch better "
                                             f"({before[0]:.4f} -> {after[0]:.4f})", report)
    if after[1] > limit:
        return TrainingResult(deltas, False, f"the candidate forgets: anchor loss {before[1]:.4f} -> "
                                             f"{after[1]:.4f} (limit {limit:.4f})", report)
    return TrainingResult(deltas, True, "", report)
