"""Prometheus metrics of the operator (prometheus-client). The list is documented in docs/metrics.md."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from toolshare.client.kube import WRITES  # noqa: F401  (counted where writes are sent)

RECONCILES = Counter("toolshare_reconciles_total", "Reconciles by object kind and result.", ["kind", "result"])
RECONCILE_SECONDS = Histogram(
    "toolshare_reconcile_duration_seconds", "Time to reconcile one object, writes included.", ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ACTIVE_SHARES = Gauge("toolshare_active_shares", "RunShares whose Ready condition is Active.")
WATCH_FAILURES = Counter("toolshare_watch_failures_total",
                         "Child watches that failed and listed again, by kind (children.py).", ["kind"])
EVENTS_LOST = Counter("toolshare_events_lost_total", "Events (Shared, Unshared, ShareExpired) the API server refused or "
                      "never got (events.py).")


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address)
