"""Per-tenant adapters: each tenant has its own lineage of weight versions, learned from its own traffic only.

A request whose ``model`` is ``<base>:<tenant>`` runs on the tenant's serving version, an engine *named lineage*
(``WeightVersions.name``; the engine knows a name and a version, nothing of tenants), in the same batches as
everyone else. Interactions carry their tenant (the store's ``tenant`` column), and each tenant's learner reads
only its own training signals: feedback, corrections and curated examples on the tenant's responses (and
``/v1/learning/manual`` examples naming its model) train its adapter, never the base model's lineage or another
tenant's. A tenant starts on the base weights (version 0); its candidates are trained from its serving version,
gated against the base model like the base lineage's (the protected facts are protected for every tenant),
saved under ``<learning_dir>/tenants/<name>/versions`` and promoted to the tenant at once (no canary); live
ratings roll a tenant back as they do the base lineage.

Tenants are created by an admin (``POST /v1/learning/tenants``, or ``--learning-tenants`` at start), never by a
request: an unknown tenant is a 404, so clients cannot make the server keep unbounded state, and
``--learning-max-tenants`` bounds them. They persist as directories under the learning directory.

Each tenant's learner is a ``LoRALearner`` that sees the engine through ``LineageView`` (its lineage's version
stands for "the serving version") and shares the base learner's training worker and reference values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.learner.job import JobBuilder
from aphrodite.continuous_learning.learner.lora import LoRALearner
from aphrodite.continuous_learning.store.private import FILE_MODE, private_dir

logger = logging.getLogger(__name__)
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_MAX_BATCH = 1_024


def check_tenant_name(name: str) -> str:
    """``name`` if it may name a tenant, else ``ValueError`` saying what may."""
    if not TENANT_NAME.fullmatch(name):
        raise ValueError("a tenant name is 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter "
                         "or digit")
    return name


class TenantLimit(ValueError):
    """Creating another tenant would pass ``--learning-max-tenants``."""


class LineageView:
    """The engine as a tenant's learner sees it: the tenant's named lineage stands for the serving version."""

    def __init__(self, engine: Any, lineage: str) -> None:
        self._engine = engine
        self.lineage = lineage

    def __getattr__(self, name: str) -> Any:  # model, tokenizer, weight_versions, run_at_safe_point, ...
        return getattr(self._engine, name)

    @property
    def weight_version(self) -> int:
        return self._engine.weight_names.get(self.lineage, 0)

    async def submit_weights(self, version: int, deltas: dict, serve: bool = True, parent: int | None = None) -> int:
        await self._engine.submit_weights(version, deltas, serve=False)
        if serve:  # StaleParent unless ``parent`` still serves the tenant
            await self._engine.name_weights(self.lineage, version, parent)
        return self.weight_version

    async def rollback_weights(self, to: int | None = None) -> int:
        if to is None:
            raise ValueError("a tenant's rollback names the version to serve")
        await self._engine.name_weights(self.lineage, to)
        return to

    async def split_weights(self, version: int | None, share: float = 0.0) -> None:
        raise ValueError("tenant versions are promoted without a canary")


@dataclasses.dataclass
class Tenant:
    """One tenant: its name, directory, learner and learning progress (saved in ``tenant.json``)."""

    name: str
    root: Path
    created: float = dataclasses.field(default_factory=time.time)
    learned_until: float = 0.0
    """Last change time of the newest training signal a task of this tenant consumed."""
    learning_steps: int = 0
    paused: bool = False
    """Set after too many refused candidates in a row; the tenant's learning waits for an operator."""
    learner: TenantLearner | None = None
    task: asyncio.Task | None = None

    def save(self) -> None:
        data = {"name": self.name, "created": self.created, "learned_until": self.learned_until,
                "learning_steps": self.learning_steps, "paused": self.paused}
        tmp = self.root / "tenant.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / "tenant.json")

    @classmethod
    def load(cls, root: Path) -> Tenant:
        data = json.loads((root / "tenant.json").read_text())
        return cls(root.name, root, float(data.get("created", 0.0)), float(data.get("learned_until", 0.0)),
                   int(data.get("learning_steps", 0)), bool(data.get("paused", False)))


class _TenantSide:
    """What a tenant's learner sees of the learning system: the shared store and its writer, the engine through
    the tenant's lineage, and the tenant's own pause flag as ``state``."""

    def __init__(self, system: Any, tenant: Tenant, lineage: str) -> None:
        self.engine = LineageView(system.engine, lineage)
        self.store, self.collector = system.store, system.collector
        self.state = tenant

    async def update_state(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.state, key, value)
        await asyncio.to_thread(self.state.save)


class TenantLearner(LoRALearner):
    """A tenant's ``LoRALearner``: its own versions, gate and rollback; the base learner's worker and references."""

    def __init__(self, side: _TenantSide, config: ServerSideConfig, base: LoRALearner) -> None:
        super().__init__(side, config)
        self.base = base

    @property
    def jobs(self) -> JobBuilder:
        return self.base.jobs

    async def runner(self):  # one training worker for every lineage: tasks take turns
        return await self.base.runner()

    async def close(self) -> None:
        pass  # the worker is the base learner's


class Tenants:
    """The tenants of one server: create, look up, learn in the background step, report."""

    def __init__(self, system: Any, config: ServerSideConfig) -> None:
        self.system = system
        self.config = config
        self.root = Path(os.path.expanduser(config.learning_dir)) / "tenants"
        self.tenants: dict[str, Tenant] = {}
        self._lock = asyncio.Lock()
        self._given: set[int] = set()
        """Version numbers handed out (a candidate is numbered before it is saved: none may get one twice)."""
        system.learner.allocate_version = self.allocate_version

    @property
    def base_model(self) -> str:
        return self.system.model_name

    def lineage(self, name: str) -> str:
        """The model name (and engine lineage) of tenant ``name``: ``ValueError`` for a malformed name,
        ``LookupError`` for one that is not a tenant."""
        check_tenant_name(name)
        if name not in self.tenants:
            raise LookupError(name)
        return f"{self.base_model}:{name}"

    def allocate_version(self) -> int:
        """A new version number for any lineage's candidate: above every version in the engine, saved by the
        base learner or a tenant's, or handed out before (on the event loop: no two callers interleave)."""
        used = list(self.system.engine.weight_versions) + list(self.system.learner.versions.versions())
        for tenant in self.tenants.values():
            if tenant.learner is not None:
                used += tenant.learner.versions.versions()
        version = max(used + list(self._given), default=0) + 1
        self._given.add(version)
        return version

    async def open(self) -> None:
        """At start: load the tenants saved under the learning directory, create those named by
        ``--learning-tenants``, and serve each tenant's saved version again."""
        await asyncio.to_thread(private_dir, str(self.root))
        for root in sorted(p for p in self.root.iterdir() if (p / "tenant.json").is_file()):
            try:
                await self._attach(Tenant.load(root))
            except Exception:  # one damaged tenant must not stop the server; its requests answer 404
                logger.exception("could not load tenant %s; it is not served", root.name)
                self.system.record_failure(f"loading tenant {root.name} failed")
        for name in self.config.tenant_names:
            await self.create(name)

    async def create(self, name: str) -> tuple[Tenant, bool]:
        """Tenant ``name``, created (on the base weights) unless it exists; (tenant, whether created now)."""
        check_tenant_name(name)
        async with self._lock:
            if name in self.tenants:
                return self.tenants[name], False
            if len(self.tenants) >= self.config.max_tenants:
                raise TenantLimit(f"this server has {len(self.tenants)} tenants, the most --learning-max-tenants "
                                  "allows")
            tenant = Tenant(name, self.root / name)
            await asyncio.to_thread(private_dir, str(tenant.root))
            await asyncio.to_thread(tenant.save)
            await self._attach(tenant)
        logger.info("tenant %s created: model %s", name, self.lineage(name))
        return tenant, True

    async def _attach(self, tenant: Tenant) -> None:
        lineage = f"{self.base_model}:{tenant.name}"
        config = dataclasses.replace(self.config, learning_dir=str(tenant.root), canary_share=0.0, export_dir="")
        tenant.learner = TenantLearner(_TenantSide(self.system, tenant, lineage), config, self.system.learner)
        tenant.learner.allocate_version = self.allocate_version
        self.tenants[tenant.name] = tenant
        await self.system.engine.name_weights(lineage, 0)
        await tenant.learner.restore()  # serves its saved version again, if any

    # -- the background step -------------------------------------------------------------------------------------
    async def step(self, force: bool = False) -> None:
        """For each tenant: judge live evidence, then start a learning task when it has enough new signals
        (``force``: the operator's trigger, which does not wait out a refusal back-off)."""
        system, config = self.system, self.config
        state = system.state
        if not state.enabled:
            return
        for tenant in list(self.tenants.values()):
            if tenant.task is not None and not tenant.task.done():
                continue
            try:
                await tenant.learner.check_live_evidence()
            except Exception:
                logger.exception("checking tenant %s's live evidence failed", tenant.name)
            if state.paused or tenant.paused or not system.may_learn or not tenant.learner.ready(ignore_backoff=force):
                continue
            since = tenant.learned_until
            unrated = config.interaction_quality_threshold if config.learn_from_unrated else None
            batch = await system.collector.writer.call(
                lambda t=tenant.name: system.store.training_signals(since, _MAX_BATCH, unrated, tenant=t))
            batch = [s for s in batch if s.created > since]
            if len(batch) >= config.min_interactions_for_learning:
                tenant.task = asyncio.create_task(self._learn(tenant, batch), name=f"learning-task-{tenant.name}")

    async def _learn(self, tenant: Tenant, batch: list) -> None:
        config = self.config
        rate = config.max_learning_rate_production * config.learning_rate_decay_production ** tenant.learning_steps
        try:
            await tenant.learner.learn(batch, rate)
        except Exception as exc:  # the batch is offered again (the learner backs off after refusals)
            logger.warning("tenant %s: learning step failed: %s", tenant.name, exc)
            self.system.record_failure(f"tenant {tenant.name}: learning step failed: {type(exc).__name__}")
            return
        tenant.learning_steps += 1
        tenant.learned_until = max(tenant.learned_until, max(s.created for s in batch))
        await asyncio.to_thread(tenant.save)

    async def stop(self) -> None:
        for tenant in self.tenants.values():
            if tenant.task is not None:
                tenant.task.cancel()
                try:
                    await tenant.task
                except (asyncio.CancelledError, Exception):
                    pass

    # -- reports -------------------------------------------------------------------------------------------------
    def report(self, name: str) -> dict[str, Any]:
        tenant = self.tenants[name]
        learner = tenant.learner
        return {"object": "learning.tenant", "name": name, "model": self.lineage(name), "parent": self.base_model,
                "created": int(tenant.created), "weight_version": learner.engine.weight_version,
                "versions": learner.versions.versions(), "learning_steps": tenant.learning_steps,
                "learning": tenant.task is not None and not tenant.task.done(), "paused": tenant.paused,
                "notice": learner.notice, "last_candidate": learner.history[-1] if learner.history else None}

    def reports(self) -> list[dict[str, Any]]:
        return [self.report(name) for name in sorted(self.tenants)]
