"""The actions of POST /v1/learning/control, as a registry so a learner can add its own (``trigger``, ``rollback``).

Example::

    async def trigger(system: ContinuousLearningSystem) -> str:
        await system.processor.run_once()
        return "learning step started"

    system.actions.register("trigger", "Run the background learning step now.", trigger)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aphrodite.continuous_learning.system import ContinuousLearningSystem

ControlHandler = Callable[["ContinuousLearningSystem"], Awaitable[str]]
"""Applies an action and returns a sentence saying what it did."""


@dataclass(frozen=True)
class ControlAction:
    """One named action."""

    name: str
    description: str
    handler: ControlHandler


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
    return ("Learning state reset: learning-rate schedule, statistics and in-memory buffers cleared; "
            "stored interactions and feedback are kept.")


def default_actions() -> ControlActions:
    """``enable``, ``disable``, ``reset``, ``pause``, ``resume``."""
    actions = ControlActions()
    actions.register("enable", "Turn capture, feedback and learning on.", _enable)
    actions.register("disable", "Turn capture, feedback and learning off.", _disable)
    actions.register("reset", "Clear the learning-rate schedule, statistics and in-memory buffers "
                              "(stored data is kept).", _reset)
    actions.register("pause", "Hold background learning; capture goes on.", _pause)
    actions.register("resume", "Resume background learning.", _resume)
    return actions
