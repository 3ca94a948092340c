"""Toolshare's access gate: the auth-url every run's Ingress calls, and the "Shared with me" page.

identity.py asks oauth2-proxy who the caller is; allowlist.py decides from what the operator
rendered into the Ingresses (held in memory through client/watch.py); shared.py and page.py build the
"Shared with me" view; app.py is the aiohttp service (`toolshare gate`).
"""
