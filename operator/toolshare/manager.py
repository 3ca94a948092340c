"""The operator process: kopf running the controller and the admission webhooks together.

The controller (controller/) and admission (admission/) never import each other; both read the
cluster through state/, and this module is where they meet in one process (as controller-runtime's
manager hosts controllers and webhooks).
"""

from __future__ import annotations

import asyncio

import kopf

try:  # kopf's per-object memory; private API, pinned by pyproject's kopf==
    from kopf._core.reactor.inventory import ResourceMemories as _ResourceMemories
except ImportError:  # pragma: no cover
    _ResourceMemories = None

if _ResourceMemories is not None:
    class ForgetfulMemories(_ResourceMemories):
        """kopf's per-object memories, kept for no object (about 0.9 KB each, 45 MB at 10,000 runs).

        kopf remembers every object it has seen (memo, error throttler, daemon and index state,
        the 'handled once' flags of change-detecting handlers) until it is deleted. The operator uses
        none of these: only `on.event` handlers (no daemons, timers, kopf indexes, resume or
        create/update handlers, no patches). An ephemeral memory per event is what kopf already
        uses for admission requests.
        """

        async def recall(self, raw_body, *, memobase=None, noticed_by_listing: bool = False,
                         ephemeral: bool = False):
            return await super().recall(raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing,
                                        ephemeral=True)




def decide_child_kinds() -> tuple:
    """Which child kinds the controller watches (state/views.configure_kinds): the configured
    routing's, which must be served, and the other route kinds that are (to clean up after a change
    of TOOLSHARE_ROUTING). Decided before kopf starts, since handlers.py registers a handler per
    watched kind when it is imported. Raises SettingsError or views.KindsUnavailable."""
    from toolshare.client.kube import Kube
    from toolshare.settings import Settings
    from toolshare.state import views

    settings = Settings.from_env()
    kube = Kube.from_environment(settings.field_manager)
    try:
        return views.configure_kinds(settings, views.probe_kinds(kube, settings))
    finally:
        kube.api.close()


def run_operator(namespaces: list[str] | None = None, verbose: bool = False,
                 liveness_endpoint: str | None = None, log_format: str = "text") -> None:
    from toolshare.logs import configure

    configure(log_format, verbose)
    decide_child_kinds()  # before the handlers are imported
    from toolshare.admission import webhooks  # noqa: F401  (registers the admission webhooks)
    from toolshare.controller import handlers, imageshares  # noqa: F401  (registers the handlers)

    asyncio.run(kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces or [],
        standalone=True,  # one replica (Deployment strategy Recreate); no peering objects needed
        liveness_endpoint=liveness_endpoint,
        memories=ForgetfulMemories(),  # no per-object kopf state: 45 MB at 10,000 runs
    ))
