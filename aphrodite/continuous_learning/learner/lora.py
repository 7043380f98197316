"""``LoRALearner``: turns training signals into a new weight version, gated before it is promoted.

One learning task: the signal policy (``policy.py``) decides what the batch teaches (curated examples and
corrections as supervised targets, ratings as KTO examples, unrated answers not at all by default); the
examples become a ``TrainingJob`` (``job.py``) that ``train_and_gate`` (``task.py``) runs on a view of the served
model sharing its base weights, starting from the deltas in service; the gate (``gate.py``) compares the
candidate with the base model on protected facts and held-out text, and with its parent on the examples.

A candidate that passes is saved under ``<learning-dir>/versions/`` and handed to the engine, which swaps it
in between two steps; one that fails is refused (counted as a learning failure) and learning backs off
(``backoff.py``). When failures pile up past ``max_recent_failures`` and ``enable_rollback_on_failure`` is on,
the engine is rolled back one version. Training runs on a worker thread with one torch thread, and before each
optimizer step it waits (up to 2 s) while the engine has requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.learner import policy
from aphrodite.continuous_learning.learner.backoff import RefusalBackoff
from aphrodite.continuous_learning.learner.job import JobBuilder
from aphrodite.continuous_learning.learner.task import TrainingResult, train_and_gate
from aphrodite.continuous_learning.store.base import TrainingSignal
from aphrodite.engine.weights import LoRADelta

logger = logging.getLogger(__name__)


class CandidateRejected(RuntimeError):
    """A trained candidate failed its evaluation and was not promoted."""


@dataclass
class Evaluation:
    """One candidate: the gate's report, what it learned from, and whether it was promoted."""

    gate: dict[str, Any]
    manifest: list[tuple[str, str]]
    """(interaction id, rule that admitted it) of every signal the candidate learned from."""
    examples: int
    seconds: float
    version: int | None = None
    accepted: bool = False
    reason: str = ""
    created: float = field(default_factory=time.time)


async def trigger(system: Any) -> str:
    """Control action: run the background step now (retention, then a learning task if enough is eligible)."""
    before = system.processor.active_tasks
    await system.processor.run_once()
    if system.processor.active_tasks > before:
        return "Learning task started; the new weight version serves once it passes the gate."
    backoff = system.learner.backoff if system.learner is not None else None
    if backoff is not None and not backoff.ready():
        return (f"No learning task started: backing off until {time.ctime(backoff.backoff_until)} after the gate "
                f"refused a candidate ({backoff.last_reason}).")
    return (f"No learning task started: needs {system.config.min_interactions_for_learning} new training "
            "signals (curated examples, ratings, corrections), learning enabled and not paused, and a free "
            "task slot.")


async def rollback(system: Any) -> str:
    """Control action: serve the previous kept weight version."""
    if system.engine.weight_version == 0:
        return "Already serving the base weights (version 0); nothing to roll back."
    version = await system.engine.rollback_weights()
    if system.learner is not None:
        await asyncio.to_thread(system.learner.record_serving, version)
    return f"Rolled back: weight version {version} serves from the next engine step."


class LoRALearner:
    """The ``Learner`` of the background processor: train, evaluate, promote or refuse, roll back on failure."""

    def __init__(self, system: Any, config: ServerSideConfig) -> None:
        self.system = system
        self.config = config
        self.engine = system.engine
        self.versions_dir = Path(os.path.expanduser(config.learning_dir)) / "versions"
        self.history: list[Evaluation] = []
        self.backoff = RefusalBackoff(config.background_learning_interval)
        self._jobs: JobBuilder | None = None

    def ready(self) -> bool:
        """Whether a learning task may start (not backing off after a refusal)."""
        return self.backoff.ready()

    @property
    def jobs(self) -> JobBuilder:
        if self._jobs is None:
            self._jobs = JobBuilder(self.engine.model, self.engine.tokenizer, self.config, self.engine.max_model_len)
        return self._jobs

    def admit(self, batch: list[TrainingSignal]) -> list[policy.PolicyExample]:
        """The signal policy applied to a batch: what it teaches (the newest ``learner_max_examples``)."""
        cfg = self.config
        admitted = policy.admit(batch, cfg.learn_from_unrated, cfg.interaction_quality_threshold,
                                cfg.learner_max_client_share, self.backoff.set_aside)
        return admitted[-cfg.learner_max_examples:]

    # -- the learning task ------------------------------------------------------------------------------------
    async def learn(self, batch: list[TrainingSignal], learning_rate: float) -> None:
        examples = self.admit(batch)
        if not examples:
            logger.info("learning step: the signal policy admitted nothing from %d signals", len(batch))
            return
        lr = self.config.learner_learning_rate * learning_rate / self.config.max_learning_rate_production
        start = self.engine.weight_deltas(self.engine.weight_version)
        result = await asyncio.to_thread(self._run, examples, start, lr)
        ev = Evaluation(result.gate, result.manifest, len(examples), result.seconds, accepted=result.accepted,
                        reason=result.reason)
        self.history = (self.history + [ev])[-50:]
        if not ev.accepted:
            if self.backoff.refused([i for ex in examples for i in ex.ids], ev.reason):
                logger.warning("a batch refused %d times unchanged is set aside", self.backoff.give_up_after)
            self._maybe_roll_back()
            raise CandidateRejected(ev.reason)
        self.backoff.promoted()
        deltas = result.deltas
        version = max(self.engine.weight_versions + [self._highest_saved()]) + 1
        await asyncio.to_thread(self._save, version, deltas, ev)
        ev.version = version
        if not self.config.enable_hot_swapping:  # saved and marked: it serves from the next restart
            await asyncio.to_thread(self.record_serving, version)
            logger.info("weight version %d saved; hot swapping is off, it serves after a restart", version)
            return
        await self.engine.submit_weights(version, deltas)
        await asyncio.to_thread(self.record_serving, version)
        logger.info("promoted weight version %d (%s)", version, result.gate.get("target"))

    def _run(self, examples: list[policy.PolicyExample], start: dict[str, LoRADelta], lr: float) -> TrainingResult:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # thread-local: the engine thread keeps its own setting
        try:
            job = self.jobs.build(examples, start, lr, seed=len(self.history))  # base values: first time only
            return train_and_gate(self.engine.model, job, before_step=self._yield_to_serving)
        finally:
            torch.set_num_threads(threads)

    def _yield_to_serving(self, max_wait_s: float = 2.0) -> None:
        """Scheduler-aware training: before each optimizer step, wait (up to ``max_wait_s``) while the engine has
        requests running or queued, so training takes the CPU mostly between bursts of traffic and still
        progresses under constant load."""
        deadline = time.monotonic() + max_wait_s
        while self.engine.num_unfinished_requests and time.monotonic() < deadline:
            time.sleep(0.02)

    def _maybe_roll_back(self) -> None:
        cfg, system = self.config, self.system
        if (cfg.enable_rollback_on_failure and self.engine.weight_version > 0
                and system.failures.recent() + 1 > cfg.max_recent_failures):
            asyncio.get_running_loop().create_task(rollback(system))
            logger.warning("too many learning failures: rolling back to the previous weight version")

    # -- versions on disk ------------------------------------------------------------------------------------
    def _save(self, version: int, deltas: dict, ev: Evaluation) -> None:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"{name}.{part}": getattr(d, part).contiguous() for name, d in deltas.items() for part in "ab"}
        meta = {"version": str(version), "scale": json.dumps({n: d.scale for n, d in deltas.items()}),
                "evaluation": json.dumps({k: v for k, v in vars(ev).items() if k != "version"})}
        tmp = self.versions_dir / f".v{version}.safetensors.tmp"
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, self.versions_dir / f"v{version}.safetensors")

    def record_serving(self, version: int) -> None:
        """Remember durably which version serves, so a restart serves it again."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.versions_dir / ".serving.json.tmp"
        tmp.write_text(json.dumps({"version": version}))
        os.replace(tmp, self.versions_dir / "serving.json")

    async def restore(self) -> int:
        """At start: hand the engine the version that served before the restart (0 if none); returns it."""
        marker = self.versions_dir / "serving.json"
        version = json.loads(marker.read_text())["version"] if marker.is_file() else 0
        path = self.versions_dir / f"v{version}.safetensors"
        if version <= 0 or not path.is_file():
            return 0
        deltas = await asyncio.to_thread(load_version, path)
        return await self.engine.submit_weights(version, deltas)

    def _highest_saved(self) -> int:
        if not self.versions_dir.is_dir():
            return 0
        found = [int(p.stem[1:]) for p in self.versions_dir.glob("v*.safetensors") if p.stem[1:].isdigit()]
        return max(found, default=0)

    def report(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else None
        return {"learner": "lora", "candidates": len(self.history),
                "promoted": sum(1 for e in self.history if e.accepted), **self.backoff.report(),
                "last": None if last is None else {k: v for k, v in vars(last).items() if k != "manifest"}}


def load_version(path: Path) -> dict[str, LoRADelta]:
    """Read the deltas of a saved version (``v<N>.safetensors``)."""
    with safe_open(str(path), framework="pt") as f:
        scales = json.loads(f.metadata()["scale"])
        return {name: LoRADelta(f.get_tensor(f"{name}.a"), f.get_tensor(f"{name}.b"), scale)
                for name, scale in scales.items()}

