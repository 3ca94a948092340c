"""ImageShare status: which share holds its image's claim, and whom it shares the image with.

A thin layer over images.status (its watch: resources.py): an event recomputes the status of
every share of the same repository, since a deletion can hand the claim to the next-oldest share.
Only differences are written.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping

from toolshare import images, model
from toolshare.client.kube import ApiError
from toolshare.conditions import contains, set_condition
from toolshare.controller.work import RT, utcnow
from toolshare.state import views
from toolshare.state.cache import CACHE

log = logging.getLogger("toolshare.imageshares")


def desired_status(share: Mapping, shares: list[Mapping], now: dt.datetime) -> dict:
    holds, message, shared = images.status(share, shares)
    old = share.get("status") or {}
    generation = share["metadata"].get("generation")
    return {
        "sharedWith": shared,
        "conditions": set_condition(old.get("conditions"), "Ready", holds,
                                    "Claimed" if holds else "ClaimedByOther", message, generation, now),
        "observedGeneration": generation,
    }


async def on_imageshare(event: str | None, body: dict) -> None:
    if event == "DELETED":
        CACHE.drop("imageshares", body)
    elif not CACHE.put("imageshares", body):
        return
    await reconcile_repository(views.image_repository(body))


async def reconcile_repository(repository: str | None) -> None:
    """Bring the status of every share of one repository in line; retry what failed to land."""
    shares = views.imageshares()
    failed = False
    for share in shares:
        if views.image_repository(share) != repository:
            continue
        status = desired_status(share, shares, utcnow())
        if contains(share.get("status") or {}, status):
            continue
        meta = share["metadata"]
        try:
            await RT.reconciler.kube.amerge_patch_status(model.API_VERSION, "ImageShare",
                                                         meta["namespace"], meta["name"], status)
        except ApiError as e:
            if e.status != 404:  # 404: gone meanwhile; anything else (API server away, 5xx) may pass
                log.warning("imageshare %s/%s: status write failed: %s", meta["namespace"], meta["name"], e)
                failed = True
    RT.timers.after(("imageshare", repository), lambda: reconcile_repository(repository), failed)
