"""Deletions no watch reported: found when a kind is listed again.

When a watch cannot resume where it stopped (410 Gone: after kube-apiserver or etcd restarts, or a
long disconnect), the kind is listed again (controller/resources.py). An object deleted while no
watch was open is simply absent from that list: no DELETED event ever comes for it, and the cache
would keep it for good (a deleted RunShare's users stay on the Ingress; a deleted child is never
re-created). Whatever the cache holds that the list lacks, and that is not newer than the list,
was deleted: it is handed to the kind's own event handler as a DELETED event.

Why this is safe: the reflector handles its events one at a time and lists in their place, so
nothing of that kind enters the cache between the list and this look. An object the list lacks
whose cached resourceVersion is not newer than it was deleted by then; the watch that follows
resumes from the list's version.
"""

from __future__ import annotations

from collections.abc import Mapping

from toolshare.state.cache import View


def _version(obj: Mapping) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def vanished(view: View, listed: set[str], version: int) -> list[Mapping]:
    """The objects in `view` (one holding every object of its kind) that a LIST at `version` with
    uids `listed` lacks and that are not newer than that LIST."""
    out: dict[str, Mapping] = {}
    for key, found in list(view.data.items()):
        if set(found) <= listed:
            continue
        for obj in view.get(key):
            uid = obj["metadata"]["uid"]
            if uid not in listed and _version(obj) <= version:
                out[uid] = obj
    return list(out.values())
