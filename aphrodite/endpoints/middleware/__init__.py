"""ASGI middleware of the server."""

from aphrodite.endpoints.middleware.continuous_learning_middleware import (
    ContinuousLearningMiddleware,
    setup_continuous_learning_middleware,
)

__all__ = ["ContinuousLearningMiddleware", "setup_continuous_learning_middleware"]
