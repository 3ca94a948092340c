"""Who may use which endpoint, exactly as the operator rendered it into the Ingresses.

Pure: an Ingress dict in, an Entry out; an Entry and an Identity in, a verdict out. The gate never
recomputes shares itself, so what it enforces is what the operator wrote (expiry and per-endpoint
shares included), and an unshare takes effect as soon as the Ingress change reaches the watch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from toolshare import model, render

ALLOWED, NOT_SIGNED_IN, FORBIDDEN, UNKNOWN = 202, 401, 403, 404


class Identity(NamedTuple):
    """Who oauth2-proxy says the caller is (never taken from the caller's own headers)."""

    user: str
    email: str
    groups: tuple[str, ...]


class Entry(NamedTuple):
    """One endpoint of one run, as its Ingress says."""

    namespace: str
    run: str
    endpoint: str
    owner: str
    users: frozenset[str]
    groups: frozenset[str]
    url: str  # where the endpoint is served, from the Ingress host and path

    @property
    def key(self) -> tuple[str, str, str]:
        return self.namespace, self.run, self.endpoint


def _split(value: object) -> frozenset[str]:
    if not isinstance(value, str):
        return frozenset()
    return frozenset(p for p in (s.strip() for s in value.split(",")) if p)


def entry_from_ingress(ingress: Mapping) -> Entry | None:
    """The Entry an operator-written Ingress describes; None for anything else or malformed."""
    meta = ingress.get("metadata") or {}
    labels = meta.get("labels") or {}
    ann = meta.get("annotations") or {}
    if labels.get(model.LABEL_MANAGED_BY) != model.MANAGED_BY:
        return None
    run, endpoint, owner = labels.get(model.LABEL_RUN), labels.get(model.LABEL_ENDPOINT), ann.get(render.ANN_OWNER)
    if not (run and endpoint and isinstance(owner, str) and owner):
        return None
    spec = ingress.get("spec") or {}
    rules = spec.get("rules") or [{}]
    host = rules[0].get("host") or ""
    paths = (rules[0].get("http") or {}).get("paths") or [{}]
    scheme = "https" if spec.get("tls") else "http"
    url = f"{scheme}://{host}{paths[0].get('path') or '/'}" if host else ""
    return Entry(meta.get("namespace") or "", run, endpoint, owner,
                 _split(ann.get(render.ANN_USERS)), _split(ann.get(render.ANN_GROUPS)), url)


def allows(entry: Entry, identity: Identity) -> bool:
    """Owner OR a listed user OR a member of a listed group."""
    return (identity.user == entry.owner or identity.user in entry.users
            or not entry.groups.isdisjoint(identity.groups))


def verdict(entry: Entry | None, identity: Identity | None) -> int:
    """The gate's answer: 401 before anything else is revealed, then 404, then 202 or 403."""
    if identity is None:
        return NOT_SIGNED_IN
    if entry is None:
        return UNKNOWN
    return ALLOWED if allows(entry, identity) else FORBIDDEN


class Store:
    """Entries by (namespace, run, endpoint), kept current by the Ingress watch (O(1) per event)."""

    def __init__(self) -> None:
        self._by_ingress: dict[tuple[str, str], Entry] = {}
        self._by_key: dict[tuple[str, str, str], Entry] = {}

    def replace(self, ingresses: Iterable[Mapping]) -> None:
        self._by_ingress, self._by_key = {}, {}
        for ing in ingresses:
            self.upsert(ing)

    def upsert(self, ingress: Mapping) -> None:
        self.delete(ingress)
        entry = entry_from_ingress(ingress)
        if entry is not None:
            self._by_ingress[_ingress_key(ingress)] = entry
            self._by_key[entry.key] = entry

    def delete(self, ingress: Mapping) -> None:
        old = self._by_ingress.pop(_ingress_key(ingress), None)
        if old is not None and self._by_key.get(old.key) == old:
            del self._by_key[old.key]

    def get(self, namespace: str, run: str, endpoint: str) -> Entry | None:
        return self._by_key.get((namespace, run, endpoint))

    def entries(self) -> list[Entry]:
        return sorted(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)


def _ingress_key(ingress: Mapping) -> tuple[str, str]:
    meta = ingress.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""
