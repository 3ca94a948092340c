"""The page's writes, sent to the API server as the signed-in person (user impersonation).

The gate's service account authenticates; the Impersonate-User and Impersonate-Group headers make
the request the person's own before authorization: RBAC, admission (owner-only sharing, the
directory, the image rules), the shared-by annotation and the audit log all see the person (the
audit event also records the gate as the impersonator). With Kubernetes 1.36's constrained
impersonation (beta, on by default), the gate's ClusterRole lets it impersonate users and groups
only to create, patch and delete RunShares and ImageShares (manifests/gate/clusterrole.yaml);
it can read nothing and write nothing else as anyone.

Names in Kubernetes' own system: namespace are never impersonated: such a user (an identity
provider that let someone be called system:kube-controller-manager) is refused outright, and such
groups are left out (system:masters is refused by the API server anyway, system:authenticated is
added by it): they are Kubernetes' identities, not the identity provider's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import aiohttp

from toolshare.client.config import ApiConfig
from toolshare.gate.forms import Write
from toolshare.gate.verdict import Identity
from toolshare.principals import is_valid_principal

log = logging.getLogger("toolshare.gate.writes")
TIMEOUT = aiohttp.ClientTimeout(total=15, sock_connect=5)


@dataclass(frozen=True)
class Outcome:
    status: int  # the API server's HTTP status (0: it could not be reached)
    message: str  # its Status message on a refusal
    obj: dict | None = None  # the stored object on success (None after a delete)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def impersonation_headers(identity: Identity) -> list[tuple[str, str]]:
    if not is_valid_principal(identity.user) or identity.user.startswith("system:"):
        raise ValueError(f"not impersonating {identity.user[:80]!r}: not a person's name "
                         "(outside the principal grammar, or one of Kubernetes' own system: names)")
    headers = [("Impersonate-User", identity.user)]
    headers += [("Impersonate-Group", g) for g in identity.groups
                if is_valid_principal(g) and not g.startswith("system:")]
    return headers


class Writer:
    def __init__(self, api: ApiConfig, session: aiohttp.ClientSession):
        self.api = api
        self.session = session

    async def send(self, write: Write, identity: Identity) -> Outcome:
        try:
            impersonate = impersonation_headers(identity)
        except ValueError as e:
            return Outcome(403, str(e))
        headers = [*self.api.headers().items(), ("Content-Type", write.content_type), *impersonate]
        try:
            async with self.session.request(write.method, self.api.host + write.path, data=json.dumps(write.body),
                                            headers=headers, ssl=self.api.ssl, timeout=TIMEOUT) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as e:
            log.error("cannot %s as %s: %s", write.what, identity.user, e)
            return Outcome(0, f"the API server cannot be reached right now ({type(e).__name__}); nothing was changed")
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            answer = {}
        if 200 <= status < 300:
            log.info("%s %s/%s as %s: %s", write.method, write.namespace, write.name or "(new)", identity.user,
                     write.what)
            return Outcome(status, "", answer if answer.get("kind") not in (None, "Status") else None)
        message = answer.get("message") if isinstance(answer, dict) else None
        return Outcome(status, message or f"the API server answered {status}")
