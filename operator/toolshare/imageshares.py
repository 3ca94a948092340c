"""ImageShare status: which share holds its image's claim, and whom it shares the image with.

A thin kopf layer over images.status: the cluster's ImageShares live in one index (the webhooks
read it too); an event recomputes the status of every share of the same repository, since a
deletion can hand the claim to the next-oldest share. Only differences are written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping

import kopf

from . import images
from .conditions import contains, set_condition
from .kube import ApiError
from .cache import CACHE, Source
from .relist import relisted

log = logging.getLogger("toolshare.imageshares")
GROUP, VERSION = "toolshare.dev", "v1alpha1"
ALL = "all"


@CACHE.index("imageshares", Source(f"/apis/{GROUP}/{VERSION}/imageshares"))
def imageshares_all(body, **_):
    return {ALL: CACHE.packed(body)}


def all_shares(index=None) -> list[Mapping]:
    return list((index if index is not None else CACHE.view("imageshares_all")).get(ALL, []))


def _repository(share: Mapping) -> str | None:
    image = (share.get("spec") or {}).get("image")
    return images.parse_image(image).repository if isinstance(image, str) and image else None


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


@kopf.on.event(GROUP, VERSION, "imageshares")
async def on_imageshare(event, body, **_):
    from .handlers import RT, utcnow  # the operator's one Kube client

    if event["type"] is None:  # from a listing: then look for deletions it did not report
        relisted("imageshares", "imageshares_all", on_imageshare, RT.reconciler.kube)
    if event["type"] == "DELETED":
        CACHE.drop("imageshares", body)
    elif not CACHE.put("imageshares", body):
        return
    await reconcile_repository(_repository(body))


async def reconcile_repository(repository: str | None) -> None:
    """Bring the status of every share of one repository in line; retry what failed to land."""
    from .handlers import RT, retry_later, utcnow

    shares = all_shares()
    failed = False
    for share in shares:
        if _repository(share) != repository:
            continue
        status = desired_status(share, shares, utcnow())
        if contains(share.get("status") or {}, status):
            continue
        meta = share["metadata"]
        try:
            await RT.reconciler.kube.amerge_patch_status(f"{GROUP}/{VERSION}", "ImageShare",
                                                         meta["namespace"], meta["name"], status)
        except ApiError as e:
            if e.status != 404:  # 404: gone meanwhile; anything else (API server away, 5xx) may pass
                log.warning("imageshare %s/%s: status write failed: %s", meta["namespace"], meta["name"], e)
                failed = True
    retry_later(("imageshare", repository), lambda: reconcile_repository(repository), failed)
