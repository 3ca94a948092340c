"""The operator process: kopf running the start-up of the controller and the admission webhooks.

The controller (controller/) and admission (admission/) never import each other; both read the
cluster through state/, and this module is where they meet in one process (as controller-runtime's
manager hosts controllers and webhooks).
"""

from __future__ import annotations

import logging

import kopf


def decide_child_kinds() -> tuple:
    """Which child kinds the controller watches (state/views.configure_kinds): the configured
    routing's, which must be served, and the other route kinds that are (to clean up after a change
    of TOOLSHARE_ROUTING). Decided before the controller starts, since views.ACTIVE_CHILD_KINDS
    says which reflectors it starts. Raises SettingsError or views.KindsUnavailable."""
    from toolshare.client.kube import Kube
    from toolshare.settings import Settings
    from toolshare.state import views

    settings = Settings.from_env()
    kube = Kube.from_environment(settings.field_manager)
    try:
        return views.configure_kinds(settings, views.probe_kinds(kube, settings))
    finally:
        kube.api.close()


async def start(servers: list, done: set) -> None:
    """The controller first, then the admission hooks: they decide from the cache the controller's
    start-up fills (as kopf's own server started only after start-up). kopf retries a start-up
    that raised (the webhook port taken, the API server away): what already started (`done`) is
    not started twice."""
    from toolshare.admission import webhooks
    from toolshare.controller import handlers

    if "controller" not in done:
        await handlers.start()
        done.add("controller")
    if not servers:
        servers.append(await webhooks.start())


async def stop(servers: list) -> None:
    from toolshare.controller import handlers

    while servers:
        await servers.pop().stop()
    await handlers.stop()


def register() -> None:
    """kopf's start-up and clean-up: start() and stop()."""
    servers: list = []
    done: set = set()

    @kopf.on.startup()
    async def on_startup(settings: kopf.OperatorSettings, **_) -> None:
        # One place for kopf's identity. No finalizers: children are owned and garbage-collected.
        settings.posting.level = logging.WARNING  # kopf's own warnings and errors become Events
        await start(servers, done)

    @kopf.on.cleanup()
    async def on_cleanup(**_) -> None:
        await stop(servers)


def run_operator(verbose: bool = False,
                 liveness_endpoint: str | None = None, log_format: str = "text") -> None:
    from toolshare import eventloop
    from toolshare.logs import configure

    configure(log_format, verbose)
    decide_child_kinds()  # before the handlers are imported
    register()

    eventloop.run(kopf.operator(
        clusterwide=True,  # the controller's reflectors watch the whole cluster; kopf itself watches nothing
        standalone=True,  # one replica (Deployment strategy Recreate); no peering objects needed
        liveness_endpoint=liveness_endpoint,
    ))
