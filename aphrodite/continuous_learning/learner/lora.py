"""``LoRALearner``: turns training signals into a new weight version, gated before it is promoted.

One learning task: the signal policy (``policy.py``) decides what the batch teaches (curated examples and
corrections as supervised targets, ratings as KTO examples, unrated answers not at all by default); the
examples become a ``TrainingJob`` (``job.py``, tokenized here with the base model's reference values computed
once per process) that ``train_and_gate`` (``task.py``) runs in the learning worker, a nice-19 process that maps
the served base weights from shared memory (``worker.py``), starting from the deltas of the version in
service. The gate (``gate.py``) compares the candidate with the base model on protected facts and held-out
text, and with its parent on the examples.

A candidate that passes is saved as a PEFT adapter directory (``versions.py``) and handed to the engine,
which swaps it in between two steps, only if its parent still serves (otherwise it is dropped and its batch
offered again: no promotion discards another). A refused candidate is counted as a learning failure and
learning backs off (``backoff.py``); after ``learner_pause_after_refusals`` refusals in a row learning pauses,
saying why. Refusals never roll back the serving version: only live evidence does (explicit ratings clearly
worse than the parent's, ``evidence.py``), checked at each background step.

With ``canary_share`` > 0 a promoted candidate is first a canary (``canary.py``): it serves that share of new
requests beside its parent until the canary's sequential test (checked at each background step) promotes it to
everyone or rolls it back; no other candidate is trained meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.learner import policy
from aphrodite.continuous_learning.learner.backoff import RefusalBackoff
from aphrodite.continuous_learning.learner.canary import Canary, judge, timed_out
from aphrodite.continuous_learning.learner.evidence import rated_worse
from aphrodite.continuous_learning.learner.job import JobBuilder
from aphrodite.continuous_learning.learner.task import TrainingJob, TrainingResult, train_and_gate
from aphrodite.continuous_learning.learner.timeline import Timeline
from aphrodite.continuous_learning.learner.versions import VersionStore
from aphrodite.continuous_learning.learner.worker import InThreadRunner, TrainingWorker, share_weights
from aphrodite.continuous_learning.store.base import TrainingSignal
from aphrodite.engine.weights import LoRADelta, StaleParent

logger = logging.getLogger(__name__)


class CandidateRejected(RuntimeError):
    """A trained candidate failed its evaluation (or its parent stopped serving) and was not promoted."""


async def trigger(system: Any) -> str:
    """Control action: run the background step now (retention, then a learning task if enough is eligible).
    The operator's trigger does not wait out the back-off after refused candidates (background steps do); a
    batch set aside after repeated refusals still teaches nothing."""
    before = system.processor.active_tasks
    await system.processor.run_once(force=True)
    if system.processor.active_tasks > before:
        return "Learning task started; the new weight version serves once it passes the gate."
    if system.learner is not None and system.learner.canary_running:
        return "No learning task started: a canary is running (promote or abort it first)."
    return (f"No learning task started: needs {system.config.min_interactions_for_learning} new training "
            "signals (curated examples, ratings, corrections), learning enabled and not paused, and a free "
            "task slot.")


async def rollback(system: Any, version: int | None = None) -> str:
    """Control action: serve kept version ``version`` (default: the serving version's parent)."""
    if version is None and system.engine.weight_version == 0:
        return "Already serving the base weights (version 0); nothing to roll back."
    served = await system.learner.serve(version, reason="operator rollback")
    return f"Rolled back: weight version {served} serves from the next engine step."


async def promote_canary(system: Any) -> str:
    """Control action: the running canary serves everyone now."""
    version = await system.learner.end_canary("promoted", "operator promoted the canary")
    return f"Canary promoted: weight version {version} serves every new request from the next engine step."


async def abort_canary(system: Any) -> str:
    """Control action: the running canary gets no new requests; its parent serves everyone."""
    version = await system.learner.end_canary("rolled back", "operator aborted the canary")
    return f"Canary aborted: weight version {version} gets no new requests; its parent serves everyone."


class LoRALearner:
    """The ``Learner`` of the background processor: admit, train, gate, promote or refuse; serve and roll back."""

    def __init__(self, system: Any, config: ServerSideConfig) -> None:
        self.system = system
        self.config = config
        self.engine = system.engine
        model = self.engine.model
        self.versions = VersionStore(Path(os.path.expanduser(config.learning_dir)) / "versions",
                                     {n: layer.output_sizes for n, layer in model.lora_targets().items()},
                                     str(self.engine.model_dir), config.learner_keep_versions)
        self.timeline = Timeline(self.versions.root / "timeline.jsonl")
        """Promotions, refusals and rollbacks, durably (``GET /v1/learning/timeline``)."""
        self.history: list[dict[str, Any]] = []
        """Reports of recent candidates (the newest last)."""
        self.backoff = RefusalBackoff(config.background_learning_interval)
        self.notice: str | None = None
        """Why learning paused or a version was rolled back automatically (shown in status)."""
        self._runner: TrainingWorker | InThreadRunner | None = None
        self._jobs: JobBuilder | None = None
        self.canary: Canary | None = None
        """The running canary, or the last one decided."""
        self.allocate_version: Callable[[], int] | None = None
        """Gives new version numbers when several lineages share the engine (per-tenant adapters, ``tenants.py``)."""

    def ready(self, ignore_backoff: bool = False) -> bool:
        """Whether a learning task may start (not backing off after a refusal, unless ``ignore_backoff``; no
        canary running)."""
        return (ignore_backoff or self.backoff.ready()) and not self.canary_running

    @property
    def canary_running(self) -> bool:
        return self.canary is not None and self.canary.running

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
        await self._record_admissions(examples)
        lr = self.config.learner_learning_rate * learning_rate / self.config.max_learning_rate_production
        parent = self.engine.weight_version
        start = self.engine.weight_deltas(parent)
        retained = await self._retained(parent, {i for ex in examples for i in ex.ids})
        job = await asyncio.to_thread(self._build, examples, start, lr, retained)
        runner = await self.runner()
        result: TrainingResult = await runner.run(train_and_gate, job)  # a crash or exception: a failed task
        report = {**result.gate, "accepted": result.accepted, "reason": result.reason, "parent": parent,
                  "created": time.time(), "seconds": result.seconds, "examples": len(examples),
                  "training": {"lr": lr, "steps": job.objective.steps, "rank": job.rank, "alpha": job.alpha,
                               "replay": len(job.replay), "stop_reason": result.stop_reason,
                               "paused_s": getattr(runner, "paused", 0.0)}}
        self.history = (self.history + [report])[-50:]
        if not result.accepted:
            if self.backoff.refused([i for ex in examples for i in ex.ids], result.reason):
                logger.warning("a batch refused %d times unchanged is set aside", self.backoff.give_up_after)
            await self._refused(result.reason)
            self.timeline.record("refused", None, parent=parent, reason=result.reason, gate=result.gate)
            raise CandidateRejected(result.reason)
        self.backoff.promoted()
        try:
            await self._promote(parent, result, report)
        except CandidateRejected as exc:
            self.timeline.record("refused", None, parent=parent, reason=str(exc), gate=result.gate)
            raise

    async def _record_admissions(self, examples: list[policy.PolicyExample]) -> None:
        """Each admitted interaction records the rule that admitted it (the store's ``admissions``)."""
        store, pairs = self.system.store, [(i, ex.rule) for ex in examples for i in ex.ids]
        try:
            await self.system.collector.writer.call(lambda: store.record_admissions(pairs, time.time()))
        except Exception:  # bookkeeping: a store that cannot record it (a full disk) does not stop learning
            logger.warning("could not record which rule admitted %d interactions", len(pairs), exc_info=True)

    def _build(self, examples: list[policy.PolicyExample], start: dict[str, LoRADelta], lr: float,
               retained: list[policy.PolicyExample]) -> TrainingJob:
        """Tokenize and attach the base reference (computed on first use: forward passes, so one torch thread
        on this worker thread; the engine thread keeps its own setting)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.jobs.build(examples, start, lr, seed=len(self.history), retained=retained)
        finally:
            torch.set_num_threads(threads)

    def _lineage_ids(self, version: int) -> list[str]:
        """Interaction ids admitted as supervised targets by ``version`` and its ancestors, newest first
        (the walk stops at a version no longer kept)."""
        ids: list[str] = []
        while version:
            try:
                manifest = self.versions.manifest(version)
            except (OSError, ValueError):
                break
            admitted = manifest.get("admitted_by", {})
            ids += [i for i, rule in reversed(list(admitted.items())) if rule in policy.SUPERVISED_RULES]
            version = int(manifest.get("parent") or 0)
        return list(dict.fromkeys(ids))

    async def _retained(self, parent: int, exclude: set[str]) -> list[policy.PolicyExample]:
        """What the serving lineage was taught (supervised, still in the store), to rehearse in the next task."""
        cap = self.config.learner_rehearsal_examples
        if cap == 0 or parent == 0:
            return []
        ids = [i for i in await asyncio.to_thread(self._lineage_ids, parent) if i not in exclude][:cap]
        store = self.system.store

        def fetch() -> list[TrainingSignal]:
            signals = []
            for i in ids:
                interaction = store.get_interaction(i)
                if interaction is not None:  # a deleted interaction is not rehearsed
                    feedback = store.feedback_for(i)
                    signals.append(TrainingSignal(interaction, feedback[-1] if feedback else None))
            return signals

        signals = await self.system.collector.writer.call(fetch)
        return [ex for ex in policy.admit(signals, quality_threshold=self.config.interaction_quality_threshold)
                if ex.supervised]

    async def _promote(self, parent: int, result: TrainingResult, report: dict[str, Any]) -> None:
        if self.canary_running:  # a task that started before the canary: one candidate at a time
            raise CandidateRejected(f"canary version {self.canary.version} is running; the batch is offered again")
        version = self.next_version()
        admitted = {interaction_id: rule for interaction_id, rule in result.manifest}
        manifest = {"parent": parent, "signals": dict(Counter(admitted.values())),
                    "interaction_ids": list(admitted), "admitted_by": admitted, "gate": result.gate,
                    "seconds": result.seconds, "training": report["training"], "forgotten_interactions": []}
        await asyncio.to_thread(self.versions.save, version, result.deltas, manifest)
        report["version"] = version
        if not self.config.enable_hot_swapping:  # saved and marked: it serves from the next restart
            await asyncio.to_thread(self.versions.record_serving, version)
            logger.info("weight version %d saved; hot swapping is off, it serves after a restart", version)
            self.timeline.record("promoted", version, parent=parent, reason="saved; serves after a restart")
            return
        share = self.config.canary_share
        try:
            await self.engine.submit_weights(version, result.deltas, serve=share == 0, parent=parent)
        except ValueError as exc:  # StaleParent: another version (or a rollback) came first; or a bad delta
            await asyncio.to_thread(self._discard, version)
            again = "; the batch is offered again" if isinstance(exc, StaleParent) else ""
            raise CandidateRejected(f"{exc}{again}") from exc
        if share > 0:
            await self.engine.split_weights(version, share)
            self.canary = Canary(version, parent, share)
            self.timeline.record("canary", version, parent=parent, reason=f"serves {100 * share:.0f}% of new requests")
            logger.info("weight version %d (parent %d) serves %.0f%% of new requests as a canary", version, parent,
                        100 * share)
            return
        await asyncio.to_thread(self._record_serving, version)
        logger.info("promoted weight version %d (parent %d): %s", version, parent, result.gate.get("target"))
        await self._announce(version)
        self.timeline.record("promoted", version, parent=parent, reason="passed the gate")

    def next_version(self) -> int:
        """A version number never used (in the engine or on disk), by any lineage."""
        if self.allocate_version is not None:
            return self.allocate_version()
        return max(self.engine.weight_versions + self.versions.versions()) + 1

    async def _refused(self, reason: str) -> None:
        in_a_row = self.backoff.refusals
        if in_a_row >= self.config.learner_pause_after_refusals and not self.system.state.paused:
            self.notice = (f"learning paused after {in_a_row} refused candidates in a row (last: "
                           f"{reason}); POST /v1/learning/control {{\"action\": \"resume\"}} to go on")
            logger.warning(self.notice)
            await self.system.update_state(paused=True)

    async def runner(self) -> TrainingWorker | InThreadRunner:
        """The training runner, started once: the worker process for a CPU model, else a thread."""
        if self._runner is None:
            model = self.engine.model
            if self.config.learner_worker == "process" and next(model.parameters()).device.type == "cpu":
                await self.engine.run_at_safe_point(lambda: share_weights(model))
                self._runner = TrainingWorker(model, busy=lambda: self.engine.num_unfinished_requests > 0,
                                              duty_cycle=self.config.learner_busy_duty_cycle)
            else:
                self._runner = InThreadRunner(model)
        return self._runner

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.close()

    # -- serving, rollback and live evidence ----------------------------------------------------------------------
    async def serve(self, version: int | None, reason: str = "") -> int:
        """Serve a kept version (``None``: the serving one's parent), loading it from disk if the engine no
        longer holds it; raises ``ValueError`` for a version that is not kept."""
        if self.canary_running:  # an operator's rollback ends the canary first
            if version is None:  # "roll back the newest version": the canary
                await self.end_canary("rolled back", "operator rollback")
                return self.engine.weight_version
            await self.end_canary("rolled back", f"operator served version {version}")
        current = self.engine.weight_version
        if version is None:
            version = self._parent_of(current)
        kept = await asyncio.to_thread(self.versions.versions)
        if version != 0 and version not in kept:  # another lineage's (a tenant's, a loaded adapter) is not ours
            raise ValueError(f"weight version {version} is not kept (kept: {self.kept()})")
        if version != 0 and version not in self.engine.weight_versions:
            deltas = await asyncio.to_thread(self.versions.load, version)
            await self.engine.submit_weights(version, deltas)
        else:
            await self.engine.rollback_weights(version)
        await asyncio.to_thread(self.versions.record_serving, version)
        logger.info("weight version %d serves (was %d): %s", version, current, reason or "requested")
        await self._announce(version)
        self.timeline.record("served", version, previous=current, reason=reason or "requested")
        return version

    async def _announce(self, version: int) -> None:
        """Tell the system a version serves now (it exports it and tells the other replicas; issue 12)."""
        served = getattr(self.system, "version_served", None)
        if served is not None:
            await served(version, self.versions.path(version) if version else None)

    def kept(self) -> list[int]:
        """Versions that can serve: the base (0) and those saved on disk."""
        return [0] + self.versions.versions()

    def _parent_of(self, version: int) -> int:
        if version == 0:
            raise ValueError("already serving the base weights (version 0); nothing to roll back")
        try:
            parent = self.versions.manifest(version).get("parent")
        except (OSError, ValueError):
            parent = None
        if parent is None or parent not in self.kept():
            parent = max([v for v in self.kept() if v < version], default=0)
        return int(parent)

    async def check_canary(self) -> None:
        """Run the canary's sequential test on the live outcomes so far; promote or roll back when it decides."""
        canary, store, cfg = self.canary, self.system.store, self.config
        versions = [canary.parent, canary.version]
        if hasattr(store, "outcomes_by_version"):
            outcomes = await self.system.collector.writer.call(
                lambda: store.outcomes_by_version(versions, canary.started))
            quality = await self.system.collector.writer.call(
                lambda: store.quality_by_version(versions, canary.started))
        else:  # a store that only groups ratings
            outcomes = await self.system.collector.writer.call(lambda: store.ratings_by_version(versions))
            quality = {}
        decision = judge(canary, outcomes[canary.parent], outcomes[canary.version], cfg.canary_min_ratings,
                         cfg.canary_looks, cfg.canary_alpha, quality)
        if decision is None and timed_out(canary, cfg.canary_max_seconds):
            decision = "promoted"
        if decision is not None:
            await self.end_canary(decision, canary.reason)

    async def end_canary(self, decision: str, reason: str) -> int:
        """``promoted``: the canary serves everyone; ``rolled back``: it gets no new requests. Returns it."""
        canary = self.canary
        if canary is None or not canary.running:
            raise ValueError("no canary is running")
        if decision == "promoted":
            await self.engine.rollback_weights(canary.version)  # serve it (kept: no disk read)
            await self.engine.split_weights(None)
            await asyncio.to_thread(self._record_serving, canary.version)
        else:
            await self.engine.split_weights(None)
            self.notice = f"rolled back canary version {canary.version} to {canary.parent}: {reason}"
        canary.decision, canary.reason = decision, reason
        self.timeline.record("canary " + decision, canary.version, parent=canary.parent, reason=reason)
        if decision == "promoted":
            await self._announce(canary.version)  # export it and tell the other replicas (issue 12)
        logger.warning("canary version %d %s: %s", canary.version, decision, reason)
        return canary.version

    async def check_live_evidence(self) -> None:
        """Decide a running canary; else roll back when explicit ratings of the serving version are clearly
        worse than its parent's."""
        if self.canary_running:
            await self.check_canary()
            return
        version = self.engine.weight_version
        if version == 0 or not self.config.enable_rollback_on_failure:
            return
        store = self.system.store
        if not hasattr(store, "ratings_by_version"):  # a store that cannot group ratings by version
            return
        parent = self._parent_of(version)
        ratings = await self.system.collector.writer.call(lambda: store.ratings_by_version([parent, version]))
        verdict = rated_worse(ratings[parent], ratings[version], self.config.learner_rollback_min_ratings,
                              self.config.learner_rollback_alpha)
        if verdict.worse:
            self.notice = f"rolled back version {version} to {parent}: {verdict.reason}"
            logger.warning(self.notice)
            await self.serve(parent, reason=verdict.reason)

    # -- versions on disk ------------------------------------------------------------------------------------
    def _record_serving(self, version: int) -> None:
        self.versions.record_serving(version)
        self.versions.prune(serving=version)

    def _discard(self, version: int) -> None:
        shutil.rmtree(self.versions.path(version), ignore_errors=True)

    def forget(self, interaction_ids: list[str]) -> list[int]:
        """Contract 4: mark the manifests of versions that learned from deleted interactions; returns them."""
        return self.versions.forget(list(interaction_ids))

    async def restore(self) -> int:
        """At start: rebuild the engine's history from disk and serve what served before the restart."""
        await asyncio.to_thread(self.versions.open)
        await asyncio.to_thread(self.timeline.open)
        serving = self.versions.serving
        for version in self.versions.versions()[-self.config.learner_keep_versions:]:
            deltas = await asyncio.to_thread(self.versions.load, version)
            await self.engine.submit_weights(version, deltas, serve=version == serving)
        if serving and serving not in self.engine.weight_versions:
            return await self.serve(serving)
        return serving

    def report(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else None
        return {"learner": "lora", "candidates": len(self.history),
                "promoted": sum(1 for e in self.history if e["accepted"]), "last": last,
                "notice": self.notice, "canary": self.canary.report() if self.canary else None,
                **self.backoff.report()}

    def list_versions(self) -> list[dict[str, Any]]:
        """Kept versions, oldest first, each with its manifest summary and whether it serves."""
        serving = self.engine.weight_version
        rows = [{"version": 0, "parent": None, "serving": serving == 0, "base": True}]
        for v in self.versions.versions():
            m = self.versions.manifest(v)
            rows.append({"version": v, "parent": m.get("parent"), "serving": v == serving,
                         "canary": self.canary_running and v == self.canary.version,
                         "created": m.get("created"), "signals": m.get("signals", {}),
                         "interactions": len(m.get("interaction_ids", [])),
                         "forgotten_interactions": len(m.get("forgotten_interactions", [])),
                         "gate": m.get("gate", {}), "path": f"versions/{self.versions.path(v).name}"})
        return rows
