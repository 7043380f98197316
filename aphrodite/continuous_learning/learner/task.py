"""One learning task as a pure function: ``train_and_gate(model, job) -> TrainingResult``.

Inputs and outputs are picklable dataclasses (token ids, tensors, numbers), so the task can run in a worker
process that maps the base weights. It touches no engine and no global state, and never writes the base
weights of ``model``: it trains on a ``trainable_view`` that shares them. (It does not set torch's thread
count either: that is the caller's choice.)

Steps: attach the parent's deltas; compute the KTO reference (the parent's log-probs of the rated completions)
once; train SFT + KTO from the parent's deltas with replay of known facts and rehearsal of what earlier
versions were taught (``retained``), stopping early once the target loss is low and the retained examples
are still the greedy answers; with ``holdout_min_examples`` or more supervised examples, first train without a held-out part to
check that the candidate generalises there, then go on with every example; finally run the gate.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from aphrodite.continuous_learning.learner.anchors import Anchor
from aphrodite.continuous_learning.learner.gate import (GateLimits, GateReference, check, decide, retained_check,
                                                     target_check)
from aphrodite.continuous_learning.learner.trainer import (Example, Objective, RatedExample, Reference,
                                                        argmax_matches, attach, default_targets, mean_nll,
                                                        reference_logps, sequence_logps, train_lora,
                                                        trainable_view)
from aphrodite.engine.weights import LoRADelta
from aphrodite.modeling.llama import LlamaForCausalLM


@dataclass
class TrainingJob:
    """Everything one learning task needs, as token ids, tensors and numbers."""

    examples: list[Example]
    """Supervised targets (curated examples, corrections): context ids + answer ids, loss on the answer."""
    rated: list[RatedExample]
    """Rated completions for KTO (desirable = positive rating)."""
    replay: list[Example]
    """Known facts trained beside the examples (disjoint from the gate's protected facts)."""
    start: dict[str, LoRADelta]
    """The parent version's deltas: training starts from them and they are the KTO reference."""
    reference: GateReference
    """The base model's values the gate compares against (computed once per process, without deltas)."""
    objective: Objective
    limits: GateLimits = field(default_factory=GateLimits)
    anchors: list[Anchor] = field(default_factory=list)
    """The base model's own samples: the candidate's distributions there are pulled towards the base model's."""
    rank: int = 8
    alpha: float = 16.0
    targets: list[str] | None = None
    """LoRA target projections; None: the parent's, or every attention and MLP projection."""
    holdout_fraction: float = 0.25
    holdout_min_examples: int = 8
    seed: int = 0
    manifest: list[tuple[str, str]] = field(default_factory=list)
    """(interaction id, rule that admitted it) of every signal in the job; returned with the result."""
    retained: list[Example] = field(default_factory=list)
    """What the serving version's lineage was taught before (supervised): rehearsed beside the new examples,
    so teaching a new fact does not make the model forget the previous ones; the gate checks it is kept."""


@dataclass
class TrainingResult:
    """A candidate and the gate's verdict on it."""

    deltas: dict[str, LoRADelta]
    accepted: bool
    reason: str
    gate: dict[str, Any]
    """The gate's full report (JSON-able): target, protected facts, held-out text, decision."""
    losses: list[float]
    stop_reason: str
    seconds: float
    manifest: list[tuple[str, str]] = field(default_factory=list)


def split_holdout(examples: list[Example], job: TrainingJob) -> tuple[list[Example], list[Example]]:
    """(train, held out): a seeded ``holdout_fraction`` of the examples once there are enough of them."""
    if len(examples) < job.holdout_min_examples:
        return examples, []
    order = list(range(len(examples)))
    random.Random(job.seed).shuffle(order)
    n_held = max(1, round(job.holdout_fraction * len(examples)))
    held = set(order[:n_held])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def train_and_gate(model: LlamaForCausalLM, job: TrainingJob,
                   before_step: Callable[[], None] | None = None) -> TrainingResult:
    """Train a candidate from ``job`` on a view of ``model`` and run the gate on it."""
    t0 = time.monotonic()
    view = trainable_view(model)
    attach(view, job.start)
    targets = job.targets or sorted(job.start) or default_targets(view)
    reference = reference_logps(view, job.rated) if job.rated else None
    train, held = split_holdout(job.examples, job)
    retained_before = sum(argmax_matches(view, [(e.ids, e.loss_from) for e in job.retained])) if job.retained else 0
    before = mean_nll(view, train) if train else 0.0
    held_before = mean_nll(view, held) if held else None

    def run(examples: list[Example], start: dict[str, LoRADelta], steps: int, seed: int) -> tuple:
        objective = Objective(**{**vars(job.objective), "steps": steps})
        return train_lora(view, examples + job.retained + job.replay, job.rated, start, targets, job.rank,
                          job.alpha, objective, stop_on=examples + job.retained, reference=reference,
                          anchors=job.anchors, seed=seed, before_step=before_step)

    deltas, losses, stop = run(train, job.start, job.objective.steps, job.seed)
    held_after = None
    if held:
        attach(view, deltas)
        held_after = mean_nll(view, held)
        more, more_losses, stop = run(job.examples, deltas, max(1, job.objective.steps // 2), job.seed + 1)
        deltas, losses = more, losses + more_losses
    attach(view, deltas)
    after = mean_nll(view, train, pause=before_step) if train else 0.0
    report = {"target": _target(before, after, held_before, held_after, job, view, reference),
              **check(view, job.reference, job.limits, pause=before_step),
              "retained": retained_check(view, job.retained, retained_before)}
    accepted, reason = decide(report)
    if not _finite(losses, deltas):  # diverged: never promoted, whatever the gate's comparisons said
        accepted, reason = False, "training diverged: a non-finite loss or delta"
    report.update(accepted=accepted, reason=reason, stop_reason=stop, steps=len(losses),
                  examples=len(job.examples), rated=len(job.rated), replay=len(job.replay))
    return TrainingResult(deltas, accepted, reason, report, losses, stop, time.monotonic() - t0, list(job.manifest))


def _finite(losses: list[float], deltas: dict[str, LoRADelta]) -> bool:
    return all(math.isfinite(x) for x in losses) and all(
        bool(torch.isfinite(d.a).all() and torch.isfinite(d.b).all()) for d in deltas.values())


def _target(before: float, after: float, held_before: float | None, held_after: float | None, job: TrainingJob,
            view: LlamaForCausalLM, reference: Reference | None) -> dict[str, Any]:
    if job.examples or reference is None:
        return target_check(before, after, held_before, held_after)
    # rated completions only: the candidate must favour the desirable ones and disfavour the others
    with torch.inference_mode():
        now = sequence_logps(view, [(r.ids, r.loss_from) for r in job.rated])
    sign = torch.tensor([1.0 if r.desirable else -1.0 for r in job.rated])
    margin = float((sign * (now - reference.logps)).mean())
    return {"rated_logp_margin": round(margin, 5), "passed": margin > 0}
