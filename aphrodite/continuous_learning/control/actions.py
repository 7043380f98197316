"""The actions of POST /v1/learning/control, as a registry so a learner can add its own (``trigger``, ``rollback``).

Example::

    async def trigger(system: ContinuousLearningSystem) -> str:
        await system.processor.run_once()
        return "learning step started"

    system.actions.register("trigger", "Run the background learning step now.", trigger)
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aphrodite.continuous_learning.system import ContinuousLearningSystem

ControlHandler = Callable[..., Awaitable[str]]
"""``handler(system)`` (or ``handler(system, version)`` for an action that takes a weight version, such as
``rollback``) applies an action and returns a sentence saying what it did."""


@dataclass(frozen=True)
class ControlAction:
    """One named action."""

    name: str
    description: str
    handler: ControlHandler

    @property
    def takes_version(self) -> bool:
        """Whether the request's ``version`` field means something to this action."""
        return "version" in inspect.signature(self.handler).parameters

    async def run(self, system: ContinuousLearningSystem, version: int | None = None) -> str:
        """Apply the action; ``ValueError`` when a version is given to an action that takes none."""
        if version is None:
            return await self.handler(system)
        if not self.takes_version:
            raise ValueError(f"the action {self.name!r} takes no version")
        return await self.handler(system, version=version)


class ControlActions:
    """Actions by name, in registration order."""

    def __init__(self) -> None:
        self._actions: dict[str, ControlAction] = {}

    def register(self, name: str, description: str, handler: ControlHandler) -> None:
        if name in self._actions:
            raise ValueError(f"control action {name!r} is already registered")
        self._actions[name] = ControlAction(name, description, handler)

    def get(self, name: str) -> ControlAction | None:
        return self._actions.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._actions)

    def describe(self) -> dict[str, str]:
        return {a.name: a.description for a in self._actions.values()}


async def _enable(system: ContinuousLearningSystem) -> str:
    await system.update_state(enabled=True)
    return "Continuous learning enabled: capture, feedback and learning are on."


async def _disable(system: ContinuousLearningSystem) -> str:
    await system.update_state(enabled=False)
    return "Continuous learning disabled: nothing is captured or learned until 'enable'."


async def _pause(system: ContinuousLearningSystem) -> str:
    await system.update_state(paused=True)
    return "Background learning paused; capture and feedback go on."


async def _resume(system: ContinuousLearningSystem) -> str:
    await system.update_state(paused=False)
    return "Background learning resumed."


async def _reset(system: ContinuousLearningSystem) -> str:
    await system.reset()
    served = ""
    if system.learner is not None and system.engine.weight_version != 0:
        await system.learner.serve(0, reason="reset")
        served = " The base weights (version 0) serve again; saved versions are kept for rollback."
    return ("Learning state reset: learning-rate schedule, statistics and in-memory buffers cleared; "
            "stored interactions and feedback are kept." + served)


def default_actions() -> ControlActions:
    """``enable``, ``disable``, ``reset``, ``pause``, ``resume``."""
    actions = ControlActions()
    actions.register("enable", "Turn capture, feedback and learning on.", _enable)
    actions.register("disable", "Turn capture, feedback and learning off.", _disable)
    actions.register("reset", "Clear the learning-rate schedule, statistics and in-memory buffers, and serve "
                              "the base weights (version 0); stored data and saved versions are kept.", _reset)
    actions.register("pause", "Hold background learning; capture goes on.", _pause)
    actions.register("resume", "Resume background learning.", _resume)
    return actions
