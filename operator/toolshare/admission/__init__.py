"""Admission: the pure decisions (decisions.py, directory.py), the webhooks that apply them
(webhooks.py, kopf), their configurations (webhookconfig.py) and TLS (certs.py)."""
