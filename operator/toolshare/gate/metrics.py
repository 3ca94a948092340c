"""Prometheus metrics of the gate, served on its own port at /metrics (docs/metrics.md)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# The answer to one /check, by what it means (the HTTP status ingress-nginx sees).
RESULTS = {202: "allowed", 401: "unauthenticated", 403: "denied", 404: "unknown", 503: "unavailable"}

DECISIONS = Counter("toolshare_gate_decisions_total", "Access checks answered, by result.", ["result"])
DECISION_SECONDS = Histogram(
    "toolshare_gate_decision_duration_seconds",
    "Time to answer one access check, the round trip to oauth2-proxy included.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ENDPOINTS = Gauge("toolshare_gate_endpoints", "Run endpoints in the gate's allow-lists.")
READY = Gauge("toolshare_gate_ready", "1 once the initial lists of Ingresses and RunShares have loaded.")
for _result in RESULTS.values():
    DECISIONS.labels(_result)  # every series exists from the start, so rate() sees the first one


def record(status: int, seconds: float) -> None:
    DECISIONS.labels(RESULTS.get(status, str(status))).inc()
    DECISION_SECONDS.observe(seconds)


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
