"""Run the kopf operator in-process, with Toolshare's handlers registered."""

from __future__ import annotations

import asyncio
import logging

import kopf


def run_operator(namespaces: list[str] | None = None, verbose: bool = False,
                 liveness_endpoint: str | None = None) -> None:
    from . import handlers  # noqa: F401  (registers the handlers with kopf)
    from . import imageshares, webhooks  # noqa: F401  (ImageShare status, admission webhooks)

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces or [],
        standalone=True,  # one replica (Deployment strategy Recreate); no peering objects needed
        liveness_endpoint=liveness_endpoint,
    ))
