"""kopf handlers: thin glue between watch events and the pure renderers."""

from __future__ import annotations

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    # One place for kopf's identity: our annotation prefix, and no finalizers on objects we only read.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="toolshare.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="toolshare.dev")
    settings.persistence.finalizer = "toolshare.dev/finalizer"
    settings.posting.level = 30  # warnings and errors become Events
    settings.watching.server_timeout = 300
