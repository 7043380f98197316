"""Request-level monitoring: latency and status of the monitored endpoints, fed by the middleware."""

from __future__ import annotations

import time
from collections import deque

from aphrodite.continuous_learning.interaction import InteractionFeedback
from aphrodite.continuous_learning.metrics import LearningMetrics

_LATENCY_WINDOW = 1_000


class RequestMonitor:
    """Counts monitored requests and keeps a window of latencies; runs on the event loop."""

    def __init__(self, metrics: LearningMetrics, feedback: deque[InteractionFeedback] | None) -> None:
        self.metrics = metrics
        self.feedback = feedback
        """Where each request's record goes as performance feedback; None when that is off."""
        self.latencies_ms: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self.requests = 0
        self.errors = 0
        self.by_endpoint: dict[str, list[int]] = {}
        """endpoint -> [requests, errors]."""

    def record(self, request_id: str, endpoint: str, method: str, status: int, seconds: float) -> None:
        """One finished monitored request (status 500 when the app raised)."""
        error = status >= 400
        self.requests += 1
        self.errors += error
        counts = self.by_endpoint.get(endpoint)
        if counts is None:
            counts = self.by_endpoint[endpoint] = [0, 0]
        counts[0] += 1
        counts[1] += error
        ms = seconds * 1000.0
        self.latencies_ms.append(ms)
        self.metrics.observe_request(endpoint, status, seconds)
        if self.feedback is not None:
            self.feedback.append(InteractionFeedback(request_id, endpoint, method, ms, status, error_occurred=error,
                                                     timestamp=time.time()))

    @property
    def success_rate(self) -> float | None:
        """Share of monitored requests answered below 400; None before the first."""
        return None if self.requests == 0 else 1.0 - self.errors / self.requests

    def latency_percentiles(self) -> dict[str, float | None]:
        """p50/p95/p99 over the last requests, in milliseconds."""
        window = sorted(self.latencies_ms)
        if not window:
            return {"p50": None, "p95": None, "p99": None}
        pick = lambda q: window[min(len(window) - 1, int(q * len(window)))]  # noqa: E731
        return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99)}

    def reset(self) -> None:
        self.latencies_ms.clear()
        self.requests = self.errors = 0
        self.by_endpoint.clear()
