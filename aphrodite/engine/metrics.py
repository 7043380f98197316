"""Prometheus metrics of the engine, under ``aphrodite:`` names, in a registry the caller owns."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from aphrodite.engine.outputs import RequestOutput

# the *_created series only add noise to every scrape
disable_created_metrics()

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                    10.0, 20.0, 40.0, 80.0)

_SWAP_BUCKETS = (2.5e-5, 5e-5, 1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2)


class EngineMetrics:
    """Counters, gauges and histograms updated once per engine step."""

    def __init__(self, registry: CollectorRegistry, model_name: str) -> None:
        labels = ["model_name"]
        self._labels = {"model_name": model_name}

        def mk(cls, name, doc, **kw):
            return cls(name, doc, labels + kw.pop("extra", []), registry=registry, **kw)

        self.running = mk(Gauge, "aphrodite:num_requests_running", "Requests in the running batch.")
        self.waiting = mk(Gauge, "aphrodite:num_requests_waiting", "Requests queued for admission.")
        self.preemptions = mk(Counter, "aphrodite:num_preemptions", "Sequences preempted for lack of KV cache.")
        self.kv_usage = mk(Gauge, "aphrodite:kv_cache_usage_perc", "Fraction of KV-cache blocks in use.")
        self.prompt_tokens = mk(Counter, "aphrodite:prompt_tokens", "Prompt tokens prefilled.")
        self.generation_tokens = mk(Counter, "aphrodite:generation_tokens", "Tokens generated.")
        self.success = mk(Counter, "aphrodite:request_success", "Finished requests.", extra=["finished_reason"])
        self.ttft = mk(Histogram, "aphrodite:time_to_first_token_seconds", "Time to first token.",
                       buckets=_LATENCY_BUCKETS)
        self.itl = mk(Histogram, "aphrodite:inter_token_latency_seconds", "Time between output tokens.",
                      buckets=_LATENCY_BUCKETS)
        self.e2e = mk(Histogram, "aphrodite:e2e_request_latency_seconds", "Arrival to finish.",
                      buckets=_LATENCY_BUCKETS)
        self.weight_version = mk(Gauge, "aphrodite:weight_version", "Weight version serving requests.")
        self.weight_swap = mk(Histogram, "aphrodite:weight_swap_seconds",
                              "Engine stall of a weight swap at the safe point (copying deltas into buffers).",
                              buckets=_SWAP_BUCKETS)
        self.prefix_queries = mk(Counter, "aphrodite:prefix_cache_queries",
                                 "Prompt tokens looked up in the prefix cache (hit rate = hits / queries).")
        self.prefix_hits = mk(Counter, "aphrodite:prefix_cache_hits",
                              "Prompt tokens found in the prefix cache and not computed again.")
        self._last_token_time: dict[str, tuple[float, int]] = {}

    def observe_step(self, num_running: int, num_waiting: int, kv_usage: float, prompt_tokens: int,
                     outputs: list[RequestOutput], num_preemptions: int) -> None:
        lb = self._labels
        self.running.labels(**lb).set(num_running)
        self.waiting.labels(**lb).set(num_waiting)
        self.kv_usage.labels(**lb).set(kv_usage)
        if prompt_tokens:
            self.prompt_tokens.labels(**lb).inc(prompt_tokens)
        if num_preemptions:
            self.preemptions.labels(**lb).inc(num_preemptions)
        for out in outputs:
            self._observe_output(out)

    def _observe_output(self, out: RequestOutput) -> None:
        lb = self._labels
        comp, m = out.outputs[0], out.metrics
        n = len(comp.token_ids)
        prev_time, prev_n = self._last_token_time.get(out.request_id, (None, 0))
        if n > prev_n:
            self.generation_tokens.labels(**lb).inc(n - prev_n)
            if prev_time is None and m.first_token_time is not None:
                self.ttft.labels(**lb).observe(m.first_token_time - m.arrival_time)
            elif prev_time is not None and m.last_token_time is not None:
                self.itl.labels(**lb).observe(m.last_token_time - prev_time)
            self._last_token_time[out.request_id] = (m.last_token_time, n)
        if out.finished:
            self._last_token_time.pop(out.request_id, None)
            self.success.labels(finished_reason=comp.finish_reason or "abort", **lb).inc()
            if m.finished_time is not None:
                self.e2e.labels(**lb).observe(m.finished_time - m.arrival_time)

    def observe_prefix_cache(self, queries: int, hits: int) -> None:
        if queries:
            self.prefix_queries.labels(**self._labels).inc(queries)
            self.prefix_hits.labels(**self._labels).inc(hits)

    def set_weight_version(self, version: int, swap_seconds: float) -> None:
        self.weight_version.labels(**self._labels).set(version)
        self.weight_swap.labels(**self._labels).observe(swap_seconds)
