"""Where the API server is and how to authenticate, for aiohttp clients (the gate's reflector and
the operator's writes), taken from the official client's config loader: kubeconfig, in-cluster
service account (its token re-read as it rotates), client certificates, exec plugins."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import kubernetes


@dataclass
class ApiConfig:
    host: str
    ssl: ssl.SSLContext | bool
    _config: kubernetes.client.Configuration

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> "ApiConfig":
        cfg = kubernetes.client.Configuration()
        if kubeconfig:
            kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            try:
                kubernetes.config.load_incluster_config(client_configuration=cfg)
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config(client_configuration=cfg)
        return cls.of(cfg)

    @classmethod
    def of(cls, cfg: kubernetes.client.Configuration) -> "ApiConfig":
        context: ssl.SSLContext | bool = False
        if cfg.verify_ssl:
            context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
            if cfg.cert_file:
                context.load_cert_chain(cfg.cert_file, cfg.key_file)
        return cls(cfg.host.rstrip("/"), context, cfg)

    def headers(self) -> dict[str, str]:
        # Asked on every request: the loader refreshes expiring in-cluster tokens here.
        token = self._config.get_api_key_with_prefix("authorization") or self._config.get_api_key_with_prefix("BearerToken")
        return {"Accept": "application/json", **({"Authorization": token} if token else {})}
