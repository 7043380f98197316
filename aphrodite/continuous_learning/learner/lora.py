"""``LoRALearner``: turns eligible interactions into a new weight version, evaluated before it is promoted.

One learning task: build training examples from the interactions (prompt as context, response as target),
train LoRA deltas on a view of the served model that shares its base weights, starting from the deltas in
service; then evaluate the candidate against the version in service on two sets:

* the batch itself: the candidate must fit it better (lower loss per response token), and
* anchor texts the model already knows (general facts shipped with the package): the candidate's perplexity
  there may rise by at most ``learner_max_anchor_regression`` (2 %: it must not forget).

Training rehearses a second, disjoint set of known facts beside the batch (experience replay), the usual guard
against catastrophic forgetting when a small batch is learned; the evaluation anchors are never trained on.

A candidate that passes is saved under ``<learning-dir>/versions/`` and handed to the engine, which swaps it
in between two steps; one that fails is refused (counted as a learning failure). When failures pile up
past ``max_recent_failures`` and ``enable_rollback_on_failure`` is on, the engine is rolled back one version.
Training runs on a worker thread with one torch thread, and before each optimizer step it waits (up to 2 s)
while the engine has requests in flight: it takes the CPU mostly between bursts of traffic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.interaction import Choice, Interaction
from aphrodite.continuous_learning.learner.trainer import (Example, attach, default_targets, mean_nll, train_lora,
                                                        trainable_view)
from aphrodite.engine.weights import LoRADelta

logger = logging.getLogger(__name__)
_ANCHOR_FILE = Path(__file__).resolve().parents[2] / "modeling" / "builtin" / "data" / "general.jsonl"


class CandidateRejected(RuntimeError):
    """A trained candidate failed its evaluation and was not promoted."""


@dataclass
class Evaluation:
    """Losses (mean NLL per scored token) of the version in service and of the candidate."""

    batch_before: float
    batch_after: float
    anchor_before: float
    anchor_after: float
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
        return "Learning task started; the new weight version serves once it passes its evaluation."
    return (f"No learning task started: needs {system.config.min_interactions_for_learning} new eligible "
            "interactions, learning enabled and not paused, and a free task slot.")


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

    # -- the learning task ------------------------------------------------------------------------------------
    async def learn(self, batch: list[Interaction], learning_rate: float) -> None:
        newest = sorted(batch, key=lambda i: i.created)[-self.config.learner_max_examples:]
        examples = [ex for i in newest if (ex := self.example(i)) is not None]
        if not examples:
            raise CandidateRejected("no usable training examples in the batch")
        serving = self.engine.weight_version
        start = self.engine.weight_deltas(serving)
        deltas, ev = await asyncio.to_thread(self._train_and_evaluate, examples, start, learning_rate)
        self.history = (self.history + [ev])[-50:]
        if not ev.accepted:
            self._maybe_roll_back()
            raise CandidateRejected(ev.reason)
        version = max(self.engine.weight_versions + [self._highest_saved()]) + 1
        await asyncio.to_thread(self._save, version, deltas, ev)
        ev.version = version
        if not self.config.enable_hot_swapping:  # saved and marked: it serves from the next restart
            await asyncio.to_thread(self.record_serving, version)
            logger.info("weight version %d saved; hot swapping is off, it serves after a restart", version)
            return
        await self.engine.submit_weights(version, deltas)
        await asyncio.to_thread(self.record_serving, version)
        logger.info("promoted weight version %d: batch loss %.3f -> %.3f, anchor loss %.3f -> %.3f", version,
                    ev.batch_before, ev.batch_after, ev.anchor_before, ev.anchor_after)

    def _train_and_evaluate(self, examples: list[Example], start: dict, lr: float) -> tuple[dict, Evaluation]:
        t0 = time.monotonic()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # thread-local: the engine thread keeps its own setting
        try:
            replay, anchors = self.anchors()
            view = trainable_view(self.engine.model)
            attach(view, start)
            before = mean_nll(view, examples), mean_nll(view, anchors)
            cfg = self.config
            deltas = train_lora(view, examples + replay, start, sorted(start) or default_targets(view),
                                cfg.learner_rank, cfg.learner_alpha, lr, cfg.learner_steps, seed=len(self.history),
                                before_step=self._yield_to_serving)
            attach(view, deltas)
            after = mean_nll(view, examples), mean_nll(view, anchors)
        finally:
            torch.set_num_threads(threads)
        ev = Evaluation(before[0], after[0], before[1], after[1], len(examples), time.monotonic() - t0)
        limit = ev.anchor_before + math.log1p(self.config.learner_max_anchor_regression)  # perplexity x (1 + r)
        if not ev.batch_after < ev.batch_before:
            ev.reason = f"the candidate does not fit its batch better ({ev.batch_before:.4f} -> {ev.batch_after:.4f})"
        elif ev.anchor_after > limit:
            ev.reason = (f"the candidate forgets: anchor loss {ev.anchor_before:.4f} -> {ev.anchor_after:.4f} "
                         f"(limit {limit:.4f})")
        else:
            ev.accepted = True
        return deltas, ev

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
                "promoted": sum(1 for e in self.history if e.accepted),
                "last": None if last is None else {k: v for k, v in vars(last).items()}}


def load_version(path: Path) -> dict[str, LoRADelta]:
    """Read the deltas of a saved version (``v<N>.safetensors``)."""
    with safe_open(str(path), framework="pt") as f:
        scales = json.loads(f.metadata()["scale"])
        return {name: LoRADelta(f.get_tensor(f"{name}.a"), f.get_tensor(f"{name}.b"), scale)
                for name, scale in scales.items()}


def _qa(question: str, answer: str) -> Interaction:
    return Interaction(id="anchor", endpoint="/v1/chat/completions", choices=[Choice(answer)],
                       messages=[{"role": "user", "content": question}])
