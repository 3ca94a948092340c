"""The rendered part of ToolRun and RunShare status (conditions are the reconciler's)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from toolshare.access import Access, ShareState, access_for
from toolshare.model import host_for, http_endpoints
from toolshare.policy import Policy
from toolshare.settings import Settings


def run_urls(run: Mapping, settings: Settings) -> list[dict[str, str]]:
    host = host_for(run, settings)
    return [{"endpoint": ep.name, "url": f"{settings.url_scheme}://{host}{ep.path}"}
            for ep in http_endpoints(run)]


def shared_with(access: Mapping[str, Access]) -> dict[str, Any]:
    """status.sharedWith: the union over endpoints, plus a one-line summary for kubectl get."""
    users = sorted({u for a in access.values() for u in a.users})
    groups = sorted({g for a in access.values() for g in a.groups})
    return {"users": users, "groups": groups, "summary": _summary(users + [f"group:{g}" for g in groups])}


def _summary(items: list[str], limit: int = 120) -> str:
    shown: list[str] = []
    for item in items:
        if shown and len(", ".join(shown + [item])) > limit:
            return ", ".join(shown) + f" (+{len(items) - len(shown)} more)"
        shown.append(item)
    return ", ".join(shown)


def run_status(run: Mapping, shares: Iterable[Mapping], settings: Settings, now: dt.datetime,
               runs_by_name: Mapping[str, Mapping] | None = None, policy: Policy | None = None) -> dict:
    """The rendered part of a ToolRun's status: urls and sharedWith (conditions are the handler's)."""
    return {"urls": run_urls(run, settings),
            "sharedWith": shared_with(access_for(run, shares, now, runs_by_name, policy))}


def share_status(state: ShareState) -> dict:
    """The rendered part of a RunShare's status: the runs it applies to."""
    return {"runs": list(state.runs)}

