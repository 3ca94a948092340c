"""Run the kopf operator in-process, with Toolshare's handlers registered."""

from __future__ import annotations

import asyncio

import kopf


def run_operator(namespaces: list[str] | None = None, verbose: bool = False,
                 liveness_endpoint: str | None = None, log_format: str = "text") -> None:
    from . import handlers  # noqa: F401  (registers the handlers with kopf)
    from . import imageshares, webhooks  # noqa: F401  (ImageShare status, admission webhooks)
    from .cache import ForgetfulMemories
    from .logs import configure

    configure(log_format, verbose)
    asyncio.run(kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces or [],
        standalone=True,  # one replica (Deployment strategy Recreate); no peering objects needed
        liveness_endpoint=liveness_endpoint,
        memories=ForgetfulMemories(),  # no per-object kopf state: 45 MB at 10,000 runs (cache.py)
    ))
