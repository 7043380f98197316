"""Continuous learning from production traffic: capture, feedback, quality scoring and durable storage."""

from aphrodite.continuous_learning.control.background import BackgroundLearningProcessor, Learner
from aphrodite.continuous_learning.capture.collector import ServerSideDataCollector
from aphrodite.continuous_learning.config import ServerSideConfig, add_learning_cli_args, learning_config_from_args
from aphrodite.continuous_learning.control.actions import ControlActions
from aphrodite.continuous_learning.interaction import Choice, Interaction, InteractionFeedback
from aphrodite.continuous_learning.scoring.scorer import QualityPredictor, QualityScorer, ScoringWeights
from aphrodite.continuous_learning.store.sqlite import SQLiteInteractionStore
from aphrodite.continuous_learning.store.base import InteractionStore, StoredFeedback, StoreError
from aphrodite.continuous_learning.system import ContinuousLearningSystem

__all__ = [
    "BackgroundLearningProcessor", "Choice", "ContinuousLearningSystem", "ControlActions", "Interaction",
    "InteractionFeedback", "InteractionStore", "Learner", "QualityPredictor", "QualityScorer",
    "SQLiteInteractionStore", "ScoringWeights", "ServerSideConfig", "ServerSideDataCollector", "StoreError",
    "StoredFeedback", "add_learning_cli_args", "learning_config_from_args",
]
