"""``LearningState``: what operators control and the learner advances, persisted in the store."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from aphrodite.continuous_learning.config import ServerSideConfig


@dataclass
class LearningState:
    """Saved on every change, so an acknowledged control action survives a restart."""

    enabled: bool = True
    """Capture, feedback and learning are on (control actions ``enable``/``disable``)."""
    paused: bool = False
    """Background learning is held while capture goes on (``pause``/``resume``)."""
    learning_steps: int = 0
    """Learning steps applied since the last reset; the learning rate decays with each."""
    learned_until: float = 0.0
    """Creation time of the newest interaction a learning step has consumed."""
    reset_at: float | None = None
    """When the state was last reset (unix seconds)."""

    def learning_rate(self, config: ServerSideConfig) -> float:
        """The production learning rate after ``learning_steps`` decays."""
        return config.max_learning_rate_production * config.learning_rate_decay_production ** self.learning_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> LearningState:
        """Read a saved state, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})
