"""The gate's answer to one request: pure, from the run and its shares as the API server holds them.

The decision itself is access.may_reach, the same code that renders the allow-lists into the
Ingresses; the Ingresses are never read back, so an object anyone with `edit` could write (a forged
Ingress carrying Toolshare's labels) changes no answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from toolshare import access
from toolshare.policy import Policy

ALLOWED, NOT_SIGNED_IN, FORBIDDEN = 202, 401, 403


class Identity(NamedTuple):
    """Who oauth2-proxy says the caller is (never taken from the caller's own headers)."""

    user: str
    email: str
    groups: tuple[str, ...]


def verdict(identity: Identity | None, run: Mapping | None, endpoint: str, shares: Iterable[Mapping],
            runs_by_name: Mapping[str, Mapping], now: dt.datetime, policy: Policy | None = None,
            image_shares: Iterable[Mapping] | None = None) -> int:
    """401 before anything is revealed; then 202 or 403. A run or endpoint that does not exist gets
    the same 403 as one the caller may not use, so a stranger learns nothing about which exist."""
    if identity is None:
        return NOT_SIGNED_IN
    if run is None:
        return FORBIDDEN
    allowed = access.may_reach(run, endpoint, shares, identity.user, identity.groups, now, runs_by_name, policy,
                               image_shares)
    return ALLOWED if allowed else FORBIDDEN
