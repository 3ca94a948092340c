"""Prometheus metrics of the gate, served on its own port at /metrics (docs/metrics.md)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# The answer to one /check, by what it means (the HTTP status ingress-nginx sees).
RESULTS = {202: "allowed", 401: "unauthenticated", 403: "denied", 503: "unavailable"}

DECISIONS = Counter("toolshare_gate_decisions_total", "Access checks answered, by result.", ["result"])
DECISION_SECONDS = Histogram(
    "toolshare_gate_decision_duration_seconds",
    "Time to answer one access check, the round trip to oauth2-proxy included.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RUNS = Gauge("toolshare_gate_runs", "ToolRuns the gate decides from.")
READY = Gauge("toolshare_gate_ready", "1 while every watch (ToolRuns, RunShares) is listed and has not failed since.")
WATCH_FAILURES = Counter("toolshare_gate_watch_failures_total",
                         "Watches that failed and were listed again (the gate answered 503 meanwhile).", ["resource"])
GUARDS = Gauge("toolshare_gate_guards", "Run guards following this gate (one websocket each).")
GUARD_REVOCATIONS = Counter("toolshare_gate_guard_revocations_total",
                            "People a guard was told to close the connections of (their access ended).")
for _result in RESULTS.values():
    DECISIONS.labels(_result)  # every series exists from the start, so rate() sees the first one


def record(status: int, seconds: float) -> None:
    DECISIONS.labels(RESULTS.get(status, str(status))).inc()
    DECISION_SECONDS.observe(seconds)


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
