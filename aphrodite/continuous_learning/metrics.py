"""Prometheus metrics of continuous learning (``aphrodite:learning_*``), in the app's own registry."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_P = "aphrodite:learning_"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class LearningMetrics:
    """Counters, histograms and gauges; gauges read live values on each scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.captured = Counter(_P + "interactions_captured", "Interactions captured, by source (api, manual).",
                                ["source"], registry=r)
        self.dropped = Counter(_P + "interactions_dropped", "Captured interactions lost: write queue full, or the "
                               "store failed to write them (e.g. a full disk).", registry=r)
        self.redactions = Counter(_P + "pii_redactions", "PII replaced by a placeholder before storing, by kind "
                                  "(email, phone, card, ip, national_id).", ["kind"], registry=r)
        self.stored = Counter(_P + "interactions_stored", "Interactions written to the store.", registry=r)
        self.feedback = Counter(_P + "feedback", "User feedback accepted at /v1/learning/feedback.", registry=r)
        self.store_errors = Counter(_P + "store_errors", "Failed store writes.", registry=r)
        self.failures = Counter(_P + "failures", "Failures of learning work (store writes, learning steps).",
                                registry=r)
        self.control_actions = Counter(_P + "control_actions", "Control actions applied.", ["action"], registry=r)
        self.background_runs = Counter(_P + "background_runs", "Background learning steps run.", registry=r)
        self.requests = Counter(_P + "monitored_requests", "Monitored requests, by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram(_P + "request_latency_seconds", "Monitored request latency to the last byte.",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.quality = Histogram(_P + "quality_score", "Quality scores of stored interactions.",
                                 buckets=_SCORE_BUCKETS, registry=r)
        self._registry = r
        self._request_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one monitored request and its latency. Labelled children are cached: ``labels()`` is a locked
        dict look-up, too slow for every request."""
        key = (endpoint, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (self.requests.labels(endpoint=endpoint, status=str(status)),
                                                       self.latency.labels(endpoint=endpoint))
        children[0].inc()
        children[1].observe(seconds)

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge whose value is ``read()`` at scrape time."""
        Gauge(_P + name, doc, registry=self._registry).set_function(read)
