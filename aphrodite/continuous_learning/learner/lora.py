"""``LoRALearner``: turns eligible interactions into a new weight version, evaluated before it is promoted.

One learning task: build training examples from the interactions (prompt as context, response as target)
and run ``train_and_gate`` (a picklable ``TrainingJob`` in, deltas and a verdict out) in the learning worker,
a nice-19 process that maps the served base weights from shared memory (``worker.py``), starting from the
deltas of the version in service. The gate compares the candidate with that version on

* the batch itself: the candidate must fit it better (lower loss per response token), and
* anchor texts the model already knows (general facts shipped with the package): the candidate's perplexity
  there may rise by at most ``learner_max_anchor_regression`` (2 %: it must not forget).

Training rehearses a second, disjoint set of known facts beside the batch (experience replay).

A candidate that passes is saved as a PEFT adapter directory (``versions.py``) and handed to the engine,
which swaps it in between two steps, only if its parent still serves (otherwise it is dropped and its batch
offered again: no promotion discards another). A refused candidate is counted as a learning failure; after
``learner_pause_after_refusals`` refusals in a row learning pauses, saying why. Refusals never roll back
the serving version: only live evidence does (explicit ratings clearly worse than the parent's,
``evidence.py``), checked at each background step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.interaction import Choice, Interaction
from aphrodite.continuous_learning.learner.evidence import rated_worse
from aphrodite.continuous_learning.learner.interim_task import TrainingJob, TrainingResult, train_and_gate
from aphrodite.continuous_learning.learner.trainer import Example, default_targets
from aphrodite.continuous_learning.learner.versions import VersionStore
from aphrodite.continuous_learning.learner.worker import InThreadRunner, TrainingWorker, share_weights
from aphrodite.engine.weights import StaleParent

logger = logging.getLogger(__name__)
_ANCHOR_FILE = Path(__file__).resolve().parents[2] / "modeling" / "builtin" / "data" / "general.jsonl"


class CandidateRejected(RuntimeError):
    """A trained candidate failed its evaluation (or its parent stopped serving) and was not promoted."""


async def trigger(system: Any) -> str:
    """Control action: run the background step now (retention, then a learning task if enough is eligible)."""
    before = system.processor.active_tasks
    await system.processor.run_once()
    if system.processor.active_tasks > before:
        return "Learning task started; the new weight version serves once it passes its evaluation."
    return (f"No learning task started: needs {system.config.min_interactions_for_learning} new eligible "
            "interactions, learning enabled and not paused, and a free task slot.")


async def rollback(system: Any, version: int | None = None) -> str:
    """Control action: serve kept version ``version`` (default: the serving version's parent)."""
    if version is None and system.engine.weight_version == 0:
        return "Already serving the base weights (version 0); nothing to roll back."
    served = await system.learner.serve(version, reason="operator rollback")
    return f"Rolled back: weight version {served} serves from the next engine step."


class LoRALearner:
    """The ``Learner`` of the background processor: train, gate, promote or refuse; serve and roll back."""

    def __init__(self, system: Any, config: ServerSideConfig) -> None:
        self.system = system
        self.config = config
        self.engine = system.engine
        model = self.engine.model
        self.versions = VersionStore(Path(os.path.expanduser(config.learning_dir)) / "versions",
                                     {n: layer.output_sizes for n, layer in model.lora_targets().items()},
                                     str(self.engine.model_dir), config.learner_keep_versions)
        self.history: list[dict[str, Any]] = []
        """Reports of recent candidates (the newest last)."""
        self.refusals_in_a_row = 0
        self.notice: str | None = None
        """Why learning paused or a version was rolled back automatically (shown in status)."""
        self._runner: TrainingWorker | InThreadRunner | None = None
        self._anchors: tuple[list[Example], list[Example]] | None = None

    # -- examples ---------------------------------------------------------------------------------------------
    def example(self, interaction: Interaction) -> Example | None:
        """Prompt as context, the response (plus the end-of-turn token for chats) as the target."""
        tok = self.engine.tokenizer
        response = interaction.completion
        if not response.strip():
            return None
        if interaction.endpoint == "/v1/completions":
            context = interaction.prompt or ""
            target = response
        else:
            messages = interaction.messages or [{"role": "user", "content": interaction.prompt or ""}]
            context = tok.apply_chat_template(messages, add_generation_prompt=True)
            target = response + (tok.eos_token or "")
        context_ids = tok.encode(context, add_special_tokens=False) if context else []
        ids = tok.encode(context + target, add_special_tokens=False)
        if not context_ids or len(ids) <= len(context_ids) or len(ids) > self.engine.max_model_len:
            return None
        return Example(ids, len(context_ids))

    def anchors(self) -> tuple[list[Example], list[Example]]:
        """(replay examples trained beside each batch, evaluation anchors never trained on)."""
        if self._anchors is None:
            records = [json.loads(line) for line in _ANCHOR_FILE.read_text().splitlines() if line.strip()]
            examples = [ex for r in records if (ex := self.example(_qa(r["question"], r["answer"])))]
            self._anchors = examples[0::2], examples[1::2]
        return self._anchors

    def job(self, examples: list[Example], start: dict, lr: float) -> TrainingJob:
        replay, anchors = self.anchors()
        cfg = self.config
        return TrainingJob(examples, replay, anchors, start, default_targets(self.engine.model), cfg.learner_rank,
                           cfg.learner_alpha, lr, cfg.learner_steps, seed=len(self.history),
                           max_anchor_regression=cfg.learner_max_anchor_regression)

    # -- the learning task ------------------------------------------------------------------------------------
    async def learn(self, batch: list[Interaction], learning_rate: float) -> None:
        newest = sorted(batch, key=lambda i: i.created)[-self.config.learner_max_examples:]
        used = [(i, ex) for i in newest if (ex := self.example(i)) is not None]
        if not used:
            raise CandidateRejected("no usable training examples in the batch")
        parent = self.engine.weight_version
        job = self.job([ex for _, ex in used], self.engine.weight_deltas(parent), learning_rate)
        runner = await self.runner()
        result: TrainingResult = await runner.run(train_and_gate, job)  # a crash or exception: a failed task
        report = {**_gate_of(result), "accepted": result.accepted, "reason": result.reason, "parent": parent,
                  "created": time.time(), "training": {"lr": job.lr, "steps": job.steps, "rank": job.rank,
                                                       "alpha": job.alpha, "replay": len(job.replay)}}
        self.history = (self.history + [report])[-50:]
        if not result.accepted:
            await self._refused(result.reason)
            raise CandidateRejected(result.reason)
        self.refusals_in_a_row = 0
        await self._promote(parent, result, [i for i, _ in used], report)

    async def _promote(self, parent: int, result: TrainingResult, learned: list[Interaction],
                       report: dict[str, Any]) -> None:
        version = max(self.engine.weight_versions + self.versions.versions()) + 1
        admitted = _admitted_by(result, learned)
        manifest = {"parent": parent, "signals": dict(Counter(i.interaction_type for i in learned)),
                    "interaction_ids": list(admitted), "admitted_by": admitted, "gate": _gate_of(result),
                    "seconds": getattr(result, "seconds", None) or _gate_of(result).get("seconds"),
                    "training": report["training"], "forgotten_interactions": []}
        await asyncio.to_thread(self.versions.save, version, result.deltas, manifest)
        report["version"] = version
        if not self.config.enable_hot_swapping:  # saved and marked: it serves from the next restart
            await asyncio.to_thread(self.versions.record_serving, version)
            logger.info("weight version %d saved; hot swapping is off, it serves after a restart", version)
            return
        try:
            await self.engine.submit_weights(version, result.deltas, parent=parent)
        except ValueError as exc:  # StaleParent: another version (or a rollback) came first; or a bad delta
            await asyncio.to_thread(self._discard, version)
            again = "; the batch is offered again" if isinstance(exc, StaleParent) else ""
            raise CandidateRejected(f"{exc}{again}") from exc
        await asyncio.to_thread(self._record_serving, version)
        logger.info("promoted weight version %d (parent %d): %s", version, parent, _gate_of(result))

    async def _refused(self, reason: str) -> None:
        self.refusals_in_a_row += 1
        limit = self.config.learner_pause_after_refusals
        if self.refusals_in_a_row >= limit and not self.system.state.paused:
            self.notice = (f"learning paused after {self.refusals_in_a_row} refused candidates in a row (last: "
                           f"{reason}); POST /v1/learning/control {{\"action\": \"resume\"}} to go on")
            logger.warning(self.notice)
            await self.system.update_state(paused=True)

    async def runner(self) -> TrainingWorker | InThreadRunner:
        """The training runner, started once: the worker process for a CPU model, else a thread."""
        if self._runner is None:
            model = self.engine.model
            if self.config.learner_worker == "process" and next(model.parameters()).device.type == "cpu":
                await self.engine.run_at_safe_point(lambda: share_weights(model))
                self._runner = TrainingWorker(model)
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
        current = self.engine.weight_version
        if version is None:
            version = self._parent_of(current)
        if version != 0 and version not in self.engine.weight_versions:
            if version not in await asyncio.to_thread(self.versions.versions):
                raise ValueError(f"weight version {version} is not kept (kept: {self.kept()})")
            deltas = await asyncio.to_thread(self.versions.load, version)
            await self.engine.submit_weights(version, deltas)
        else:
            await self.engine.rollback_weights(version)
        await asyncio.to_thread(self.versions.record_serving, version)
        logger.info("weight version %d serves (was %d): %s", version, current, reason or "requested")
        return version

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

    async def check_live_evidence(self) -> None:
        """Roll back when explicit ratings of the serving version are clearly worse than its parent's."""
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
                "refusals_in_a_row": self.refusals_in_a_row, "notice": self.notice}

    def list_versions(self) -> list[dict[str, Any]]:
        """Kept versions, oldest first, each with its manifest summary and whether it serves."""
        serving = self.engine.weight_version
        rows = [{"version": 0, "parent": None, "serving": serving == 0, "base": True}]
        for v in self.versions.versions():
            m = self.versions.manifest(v)
            rows.append({"version": v, "parent": m.get("parent"), "serving": v == serving,
                         "created": m.get("created"), "signals": m.get("signals", {}),
                         "interactions": len(m.get("interaction_ids", [])),
                         "forgotten_interactions": len(m.get("forgotten_interactions", [])),
                         "gate": m.get("gate", {}), "path": str(self.versions.path(v))})
        return rows


def _gate_of(result: Any) -> dict[str, Any]:
    """The gate's report of a ``TrainingResult`` (``gate`` in learner/task.py, ``report`` in the interim one)."""
    return dict(getattr(result, "gate", None) or getattr(result, "report", None) or {})


def _admitted_by(result: Any, learned: list[Interaction]) -> dict[str, str]:
    """Interaction id -> the rule that admitted it: from the result's manifest (learner/task.py) when it has
    one, else every interaction of the batch, admitted by the quality threshold."""
    pairs = getattr(result, "manifest", None)
    if pairs:
        return {interaction_id: rule for interaction_id, rule in pairs}
    return {i.id: "quality_threshold" for i in learned}


def _qa(question: str, answer: str) -> Interaction:
    return Interaction(id="anchor", endpoint="/v1/chat/completions", choices=[Choice(answer)],
                       messages=[{"role": "user", "content": question}])
