"""Where the API server is and how to authenticate, for aiohttp clients (the gate's reflector and
the operator's writes), taken from the official client's config loader: kubeconfig, in-cluster
service account (its token re-read as it rotates), client certificates, exec plugins."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field

import kubernetes


HEADERS_TTL = 10.0


@dataclass
class ApiConfig:
    host: str
    ssl: ssl.SSLContext | bool
    _config: kubernetes.client.Configuration
    _headers: dict[str, str] | None = field(default=None, repr=False)
    _headers_until: float = 0.0

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
        """The request headers, the token refreshed at most every HEADERS_TTL seconds.

        The loader's refresh hook runs inside get_api_key_with_prefix: for a kubeconfig it loads
        the whole configuration again (proxies from the environment included), 8% of the
        operator's busy CPU per share change when asked on every request (py-spy, issue 17).
        Tokens rotate in minutes (the in-cluster loader itself re-reads its file once a minute)."""
        now = time.monotonic()
        if self._headers is None or now >= self._headers_until:
            token = (self._config.get_api_key_with_prefix("authorization")
                     or self._config.get_api_key_with_prefix("BearerToken"))
            self._headers = {"Accept": "application/json", **({"Authorization": token} if token else {})}
            self._headers_until = now + HEADERS_TTL
        return dict(self._headers)
