"""The Grafana dashboard in examples/observability/ queries only metrics a running server exports: every
``aphrodite:*`` name in its PromQL (panels, template variables, annotations) is a gauge the server exports, or a
counter's ``_total``, or a histogram's ``_bucket``/``_sum``/``_count``; and it shows every learning metric."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.server_process import RemoteServer

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "observability" / "grafana_dashboard.json"
NAME = re.compile(r"aphrodite:[A-Za-z0-9_:]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
            "summary": ("_sum", "_count", "")}


def queried_names(node) -> set[str]:
    """Metric names in every PromQL string of the dashboard (``expr``, template ``query``/``definition``)."""
    if isinstance(node, dict):
        found = set()
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                found |= set(NAME.findall(value))
            else:
                found |= queried_names(value)
        return found
    if isinstance(node, list):
        return set().union(*(queried_names(v) for v in node)) if node else set()
    return set()


def exported_names(text: str) -> set[str]:
    """Series names a scrape may hold: each family (samples or not yet) with its type's suffixes."""
    return {family.name + suffix for family in text_string_to_metric_families(text)
            for suffix in SUFFIXES.get(family.type, ("",))}


def test_every_metric_the_dashboard_queries_is_exported(operator_server: RemoteServer):
    dashboard = json.loads(DASHBOARD.read_text())
    queried = queried_names(dashboard)
    assert len(queried) >= 25 and {"aphrodite:learning_interactions_dropped_total", "aphrodite:weight_version",
                                   "aphrodite:time_to_first_token_seconds_bucket"} <= queried
    server = operator_server  # tests/operator_server.py, shared with the console and CLI tests
    chat = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
        "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert chat.status_code == 200
    text = httpx.get(server.url + "/metrics", timeout=10).text
    exported = exported_names(text)
    missing = sorted(queried - exported)
    assert not missing, f"the dashboard queries metrics the server does not export: {missing}"
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert "aphrodite:request_success_total" in samples and "aphrodite:learning_weight_version" in samples
    # and the converse for learning: every learning metric the server exports has a panel
    families = {f.name: f.type for f in text_string_to_metric_families(text) if f.name.startswith("aphrodite:learning")}
    unshown = sorted(name for name, kind in families.items()
                     if not any(name + suffix in queried for suffix in SUFFIXES.get(kind, ("",))))
    assert not unshown, f"learning metrics the dashboard does not show: {unshown}"
