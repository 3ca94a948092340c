"""The controller: kopf wiring (handlers.py), queued work (work.py, workqueue.py), the reconciler
that turns desired children into writes (reconcile.py), ImageShare status (imageshares.py)."""
