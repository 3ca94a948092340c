"""Who may do what: the admission policy's configuration, read once from the environment.

Administrators, trusted appliers (GitOps controllers allowed to share on behalf of owners), the
optional directory of known principals, and the rule for images no ImageShare has claimed. Every
value is validated at startup; a bad one stops the operator with a message naming the variable.

TOOLSHARE_TRUSTED_APPLIERS is a list of entries separated by ';' or whitespace, each
``KIND:NAME[=NAMESPACE,NAMESPACE...]``:

    serviceaccount:argocd/argocd-application-controller=team-a,team-b
    group:flux-appliers
    user:release-bot@example.org=apps

KIND is user, group or serviceaccount (NAME is then NAMESPACE/NAME); without ``=...`` the applier
may share in every namespace. '=' cannot occur in a principal, so the split is unambiguous.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping

from toolshare.model import RESERVED_NAMES
from toolshare.principals import is_dns_label, is_valid_principal

SYSTEM_MASTERS = "system:masters"
DEFAULT_ADMIN_GROUP = "toolshare:admins"
APPLIER_KINDS = ("user", "group", "serviceaccount")
CLAIM_KINDS = ("user", "group", "namespace")
_CLAIM_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9.:_/]|\{user\}|\{namespace\})*/$")
_SEGMENT_RE = re.compile(r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")
_REGISTRY_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9.:_/]*)?$")


class PolicyError(ValueError):
    """A policy setting is malformed; the message names the variable and the entry."""


@dataclasses.dataclass(frozen=True)
class TrustedApplier:
    kind: str  # user | group | serviceaccount
    name: str  # for serviceaccount: "namespace/name"
    namespaces: tuple[str, ...] = ()  # empty: every namespace

    @property
    def username(self) -> str | None:
        """The user name the API server reports for this applier (None for a group)."""
        if self.kind == "user":
            return self.name
        if self.kind == "serviceaccount":
            ns, _, name = self.name.partition("/")
            return f"system:serviceaccount:{ns}:{name}"
        return None

    def matches(self, username: str, groups: Iterable[str], namespace: str) -> bool:
        if self.namespaces and namespace not in self.namespaces:
            return False
        if self.kind == "group":
            return self.name in set(groups)
        return username == self.username

    def __str__(self) -> str:
        scope = f"={','.join(self.namespaces)}" if self.namespaces else ""
        return f"{self.kind}:{self.name}{scope}"


@dataclasses.dataclass(frozen=True)
class ClaimRule:
    """Who may claim images under which prefixes: `KIND:NAME=PREFIX[,PREFIX...]`, KIND user, group or
    namespace (of the ImageShare), NAME or `*`; a prefix may hold {user} and {namespace}."""

    kind: str
    name: str
    prefixes: tuple[str, ...]

    def prefixes_for(self, user: str, groups: Iterable[str], namespace: str) -> list[str]:
        subject = {"user": user, "namespace": namespace}.get(self.kind)
        if self.kind == "group":
            if self.name != "*" and self.name not in set(groups):
                return []
        elif self.name not in ("*", subject):
            return []
        out = []
        for prefix in self.prefixes:
            # A placeholder stands for one path segment only: a user named "bob/x" must not reach
            # into bob's space.
            values = {"{user}": user, "{namespace}": namespace}
            if any(k in prefix and not _SEGMENT_RE.fullmatch(v) for k, v in values.items()):
                continue
            for k, v in values.items():
                prefix = prefix.replace(k, v)
            out.append(prefix)
        return out

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}={','.join(self.prefixes)}"


def parse_claim_rules(text: str, var: str = "TOOLSHARE_IMAGE_CLAIMS") -> tuple[ClaimRule, ...]:
    rules = []
    for entry in filter(None, re.split(r"[;\s]+", text)):
        kind, sep, rest = entry.partition(":")
        name, eq, prefixes = rest.partition("=")
        where = f"{var}: entry {entry!r}"
        if not sep or kind not in CLAIM_KINDS:
            raise PolicyError(f"{where}: must start with user:, group: or namespace:")
        if not eq or not prefixes:
            raise PolicyError(f"{where}: must be KIND:NAME=PREFIX[,PREFIX...]")
        if name != "*" and not (is_dns_label(name) if kind == "namespace" else is_valid_principal(name)):
            raise PolicyError(f"{where}: {name!r} is not a {kind} name (or *)")
        parts = tuple(filter(None, prefixes.split(",")))
        bad = [p for p in parts if not _CLAIM_PREFIX_RE.fullmatch(p)]
        if bad:
            raise PolicyError(f"{where}: {bad[0]!r} is not an image prefix such as registry.example.org/{{user}}/")
        rules.append(ClaimRule(kind, name, parts))
    return tuple(rules)


def parse_trusted_appliers(text: str, var: str = "TOOLSHARE_TRUSTED_APPLIERS") -> tuple[TrustedApplier, ...]:
    appliers = []
    for entry in filter(None, re.split(r"[;\s]+", text)):
        kind, sep, rest = entry.partition(":")
        name, _, scope = rest.partition("=")
        namespaces = tuple(filter(None, scope.split(","))) if scope else ()
        where = f"{var}: entry {entry!r}"
        if not sep or kind not in APPLIER_KINDS:
            raise PolicyError(f"{where}: must start with user:, group: or serviceaccount:")
        if kind == "serviceaccount":
            ns, slash, sa = name.partition("/")
            if not slash or not is_dns_label(ns) or not is_dns_label(sa):
                raise PolicyError(f"{where}: a service account is NAMESPACE/NAME (DNS-1123 labels)")
        elif not is_valid_principal(name):
            raise PolicyError(f"{where}: {name!r} is not a valid {kind} name")
        if "=" in rest and not namespaces:
            raise PolicyError(f"{where}: '=' must be followed by namespaces separated by ','")
        bad = [ns for ns in namespaces if not is_dns_label(ns)]
        if bad:
            raise PolicyError(f"{where}: {bad[0]!r} is not a namespace name")
        appliers.append(TrustedApplier(kind, name, namespaces))
    return tuple(appliers)


def _split(text: str) -> tuple[str, ...]:
    return tuple(filter(None, re.split(r"[,\s]+", text)))


def _env(name: str) -> dict[str, str]:
    return {"env": name}


@dataclasses.dataclass(frozen=True)
class Policy:
    # Members of these groups (and of system:masters, always) may name any owner and share any run.
    admin_groups: tuple[str, ...] = dataclasses.field(
        default=(DEFAULT_ADMIN_GROUP,), metadata=_env("TOOLSHARE_ADMIN_GROUPS"))
    # GitOps controllers and the like that may create RunShares for runs they do not own.
    trusted_appliers: tuple[TrustedApplier, ...] = dataclasses.field(
        default=(), metadata=_env("TOOLSHARE_TRUSTED_APPLIERS"))
    # "NAMESPACE/NAME" of the directory ConfigMap of known users and groups; "" = no directory.
    directory: str = dataclasses.field(default="", metadata=_env("TOOLSHARE_DIRECTORY"))
    # Image prefixes (e.g. "registry.example.org/" or "*" for all) that need an ImageShare: an
    # image no ImageShare has claimed is refused under these; every other unclaimed image is allowed.
    unclaimed_image_deny: tuple[str, ...] = dataclasses.field(
        default=(), metadata=_env("TOOLSHARE_UNCLAIMED_IMAGES_DENY"))
    # Friendly names no run may take: the hosts Toolshare itself serves under the base domain
    # ("auth", the sign-in host, always), plus the administrator's (the gate's, a portal's, ...).
    reserved_names: tuple[str, ...] = dataclasses.field(
        default=RESERVED_NAMES, metadata=_env("TOOLSHARE_RESERVED_NAMES"))
    # Who may claim images under which prefixes (ImageShare); none: only administrators claim.
    image_claims: tuple[ClaimRule, ...] = dataclasses.field(default=(), metadata=_env("TOOLSHARE_IMAGE_CLAIMS"))
    # Node paths a ToolRun's spec.template may mount as hostPath volumes (the path or below it);
    # none by default. Pod Security's baseline and restricted standards refuse hostPath anyway.
    allowed_host_paths: tuple[str, ...] = dataclasses.field(default=(), metadata=_env("TOOLSHARE_ALLOWED_HOST_PATHS"))

    def __post_init__(self) -> None:
        bad = [g for g in self.admin_groups if not is_valid_principal(g)]
        if bad:
            raise PolicyError(f"TOOLSHARE_ADMIN_GROUPS: {bad[0]!r} is not a valid group name")
        if self.directory:
            ns, slash, name = self.directory.partition("/")
            if not slash or not is_dns_label(ns) or not is_dns_label(name):
                raise PolicyError(f"TOOLSHARE_DIRECTORY={self.directory!r}: must be NAMESPACE/NAME of a ConfigMap")
        bad = [n for n in self.reserved_names if not is_dns_label(n)]
        if bad:
            raise PolicyError(f"TOOLSHARE_RESERVED_NAMES: {bad[0]!r} is not a DNS-1123 label")
        object.__setattr__(self, "reserved_names", tuple(sorted({*RESERVED_NAMES, *self.reserved_names})))
        bad = [p for p in self.allowed_host_paths if not p.startswith("/") or ".." in p.split("/")]
        if bad:
            raise PolicyError(f"TOOLSHARE_ALLOWED_HOST_PATHS: {bad[0]!r} must be an absolute path without '..'")
        bad = [p for p in self.unclaimed_image_deny if p != "*" and not _REGISTRY_PREFIX_RE.fullmatch(p)]
        if bad:
            raise PolicyError(f"TOOLSHARE_UNCLAIMED_IMAGES_DENY: {bad[0]!r} is not an image prefix "
                              "(lower-case, such as registry.example.org/ or docker.io/library/) or *")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Policy:
        kwargs: dict = {}
        if (v := env.get("TOOLSHARE_ADMIN_GROUPS", "").strip()):
            kwargs["admin_groups"] = _split(v)
        if (v := env.get("TOOLSHARE_TRUSTED_APPLIERS", "").strip()):
            kwargs["trusted_appliers"] = parse_trusted_appliers(v)
        if (v := env.get("TOOLSHARE_DIRECTORY", "").strip()):
            kwargs["directory"] = v
        if (v := env.get("TOOLSHARE_UNCLAIMED_IMAGES_DENY", "").strip()):
            kwargs["unclaimed_image_deny"] = _split(v)
        if (v := env.get("TOOLSHARE_RESERVED_NAMES", "").strip()):
            kwargs["reserved_names"] = _split(v)
        if (v := env.get("TOOLSHARE_IMAGE_CLAIMS", "").strip()):
            kwargs["image_claims"] = parse_claim_rules(v)
        if (v := env.get("TOOLSHARE_ALLOWED_HOST_PATHS", "").strip()):
            kwargs["allowed_host_paths"] = _split(v)
        return cls(**kwargs)

    @property
    def directory_ref(self) -> tuple[str, str] | None:
        if not self.directory:
            return None
        ns, _, name = self.directory.partition("/")
        return ns, name

    def claimable(self, user: str, groups: Iterable[str], namespace: str) -> list[str]:
        """The image prefixes `user` (in `groups`) may claim from `namespace`, by the claim rules."""
        groups = list(groups)
        return sorted({p for rule in self.image_claims for p in rule.prefixes_for(user, groups, namespace)})

    def is_admin(self, groups: Iterable[str]) -> bool:
        return not {SYSTEM_MASTERS, *self.admin_groups}.isdisjoint(groups)

    def trusted_applier(self, username: str, groups: Iterable[str], namespace: str) -> TrustedApplier | None:
        groups = list(groups)
        return next((a for a in self.trusted_appliers if a.matches(username, groups, namespace)), None)

    def conferring_groups(self, groups: Iterable[str]) -> tuple[str, ...]:
        """The requester's groups that give sharing rights: recorded on a RunShare, nothing more."""
        wanted = {SYSTEM_MASTERS, *self.admin_groups, *(a.name for a in self.trusted_appliers if a.kind == "group")}
        return tuple(sorted(g for g in set(groups) if g in wanted and is_valid_principal(g)))
