"""What a guard is told by its Pod's environment (rendered by render/guard.py). Pure.

TOOLSHARE_GUARD_RUN        <namespace>/<run>
TOOLSHARE_GUARD_ENDPOINTS  <endpoint>=<guard port>:<tool port>[:https][,...]  (HTTP endpoints only;
                           :https: the tool speaks HTTPS on the Pod's loopback)
TOOLSHARE_GUARD_OPS_PORT   where /readyz and /healthz answer (the kubelet's probes)
TOOLSHARE_GATE_URL         the gate the guard follows (/guard/<namespace>/<run>)
TOOLSHARE_GRANT_PUBLIC_KEY the gate's Ed25519 public key (grant.public_text)
TOOLSHARE_GUARD_GRACE      seconds open connections survive without the gate (default 5)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from toolshare.grant import load_public
from toolshare.principals import is_dns_label

_ENDPOINT = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)=([0-9]{1,5}):([0-9]{1,5})(:https)?$")
_GATE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")


class GuardEndpoint(NamedTuple):
    name: str
    port: int  # the guard listens here (the Service's target)
    tool_port: int  # the tool, on the Pod's loopback
    tls: bool = False  # the tool speaks HTTPS (its certificate is not checked: it is the Pod itself)


class GuardConfig(NamedTuple):
    namespace: str
    run: str
    endpoints: tuple[GuardEndpoint, ...]
    ops_port: int
    gate_url: str
    public_key: str
    grace: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GuardConfig:
        """The configuration, or ValueError naming the variable and the rule."""
        def need(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ValueError(f"{name}: required")
            return value

        namespace, _, run = need("TOOLSHARE_GUARD_RUN").partition("/")
        if not (is_dns_label(namespace) and run and len(run) <= 253 and re.fullmatch(r"[a-z0-9.-]+", run)):
            raise ValueError("TOOLSHARE_GUARD_RUN: must be <namespace>/<run>")
        endpoints = []
        for item in need("TOOLSHARE_GUARD_ENDPOINTS").split(","):
            m = _ENDPOINT.match(item.strip())
            if not m or not all(0 < int(p) < 65536 for p in (m[3], m[4])):
                raise ValueError(f"TOOLSHARE_GUARD_ENDPOINTS: {item!r} is not <endpoint>=<port>:<tool port>[:https]")
            endpoints.append(GuardEndpoint(m[1], int(m[3]), int(m[4]), bool(m[5])))
        ports = [e.port for e in endpoints] + [e.tool_port for e in endpoints]
        ops = need("TOOLSHARE_GUARD_OPS_PORT")
        if not ops.isdigit() or not 0 < int(ops) < 65536:
            raise ValueError("TOOLSHARE_GUARD_OPS_PORT: must be a port")
        if len(set(ports + [int(ops)])) != len(ports) + 1:
            raise ValueError("TOOLSHARE_GUARD_ENDPOINTS: every guard, tool and ops port must differ")
        gate = need("TOOLSHARE_GATE_URL").rstrip("/")
        if not _GATE.match(gate):
            raise ValueError("TOOLSHARE_GATE_URL: must be http(s)://host[:port][/path]")
        key = need("TOOLSHARE_GRANT_PUBLIC_KEY")
        load_public(key)  # ValueError names the key
        grace = env.get("TOOLSHARE_GUARD_GRACE", "").strip() or "5"
        try:
            seconds = float(grace)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= 300:
            raise ValueError("TOOLSHARE_GUARD_GRACE: seconds between 0 and 300")
        return cls(namespace, run, tuple(endpoints), int(ops), gate, key, seconds)
