"""Status conditions the Kubernetes way (api-conventions): pure functions, no I/O.

lastTransitionTime changes only when a condition's status flips, so an unchanged verdict renders an
unchanged status and costs no write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence


def now_iso(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(existing: Sequence[Mapping] | None, type_: str, status: bool, reason: str,
                  message: str, generation: int | None, now: dt.datetime) -> list[dict]:
    """Return the condition list with `type_` set, keeping lastTransitionTime unless status flips."""
    value = "True" if status else "False"
    out, found = [], False
    for cond in existing or []:
        cond = dict(cond)
        if cond.get("type") == type_:
            found = True
            transition = cond.get("lastTransitionTime") if cond.get("status") == value else None
            cond = {"type": type_, "status": value, "reason": reason, "message": message,
                    "lastTransitionTime": transition or now_iso(now)}
            if generation is not None:
                cond["observedGeneration"] = generation
        out.append(cond)
    if not found:
        cond = {"type": type_, "status": value, "reason": reason, "message": message,
                "lastTransitionTime": now_iso(now)}
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
    return out


_PLAIN = (str, list, int, float, bool, type(None))  # what else parsed JSON holds


def contains(actual, desired) -> bool:
    """True if every field of `desired` is present and equal in `actual`.

    Dicts may have extra keys in `actual` (server defaults); lists must match element by element.
    This is how a reconcile decides that a child needs no write.
    """
    # Concrete types first: the objects are parsed JSON, and an ABC isinstance (Mapping) cost
    # three times the comparison itself on every child of every reconcile (BENCHMARKS.md, issue 17).
    if isinstance(desired, dict) or (not isinstance(desired, _PLAIN) and isinstance(desired, Mapping)):
        if not (isinstance(actual, dict) or isinstance(actual, Mapping)):
            return False
        for key, value in desired.items():
            if key not in actual or not contains(actual[key], value):
                return False
        return True
    if isinstance(desired, list):
        return isinstance(actual, list) and len(actual) == len(desired) and all(map(contains, actual, desired))
    return actual == desired
