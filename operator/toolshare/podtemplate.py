"""spec.template of a ToolRun: what it may ask of the Pod, and what its writer must be allowed to use.

Pure: the admission webhook, the operator's own validation (model.validate_run) and the renderer
(render/pod.py) all import these. The CRD schema already refuses most of what would break the
sharing guarantees (host namespaces, privileged, capabilities beyond the baseline standard's,
unconfined seccomp: each a CEL rule with a message); this module repeats those rules for a
cluster whose CRD is older than the operator, and adds the ones that need the administrator's
policy (hostPath) or the writer's rights (references()).

Kubernetes lets anyone who may create a Pod mount every Secret, ConfigMap and claim of its
namespace and run as any of its service accounts. A ToolRun writer is not trusted that far: every
object the template names must be one the writer could read (or, for a service account, mint
tokens for) themselves, checked by the webhook with a SubjectAccessReview for each.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import NamedTuple

# What the baseline Pod Security Standard lets a container add; anything else reaches the node.
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
VOLUME_SOURCES = ("persistentVolumeClaim", "configMap", "secret", "emptyDir", "hostPath")
RESERVED_CONTAINERS = ("tool", "toolshare-guard")


class Reference(NamedTuple):
    """An object the template uses, and the access review its writer must pass for it."""
    field: str  # where the template names it, for the refusal message
    resource: str  # secrets, configmaps, persistentvolumeclaims, serviceaccounts
    name: str
    verb: str = "get"
    subresource: str = ""

    @property
    def kind(self) -> str:
        return {"secrets": "Secret", "configmaps": "ConfigMap", "persistentvolumeclaims": "PersistentVolumeClaim",
                "serviceaccounts": "ServiceAccount"}[self.resource]


def _dicts(value) -> list[Mapping]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def template_of(run: Mapping) -> Mapping:
    spec = run.get("spec") if isinstance(run.get("spec"), Mapping) else {}
    template = spec.get("template")
    return template if isinstance(template, Mapping) else {}


def host_path_allowed(path: str, allowed: Iterable[str]) -> bool:
    """Whether `path` is one of the administrator's allowed paths or below one (whole components)."""
    if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
        return False
    path = posixpath.normpath(path)
    for prefix in allowed:
        prefix = posixpath.normpath(prefix)
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return True
    return False


def _security_problems(where: str, context) -> list[str]:
    if not isinstance(context, Mapping):
        return []
    problems = []
    if context.get("privileged"):
        problems.append(f"{where}.privileged: privileged containers are refused: a privileged container is "
                        "root on the node")
    added = (context.get("capabilities") or {}).get("add") if isinstance(context.get("capabilities"), Mapping) else None
    extra = sorted({str(c) for c in added or []} - BASELINE_CAPABILITIES)
    if extra:
        problems.append(f"{where}.capabilities.add: {', '.join(extra)} refused: only "
                        f"{', '.join(sorted(BASELINE_CAPABILITIES))} (baseline Pod Security) may be added")
    problems += _seccomp_problems(where, context)
    return problems


def _seccomp_problems(where: str, context: Mapping) -> list[str]:
    profile = context.get("seccompProfile")
    if isinstance(profile, Mapping) and profile.get("type") == "Unconfined":
        return [f"{where}.seccompProfile.type Unconfined is refused: a tool's system calls are always filtered "
                "(baseline Pod Security)"]
    return []


def _mount_problems(where: str, mounts: list[Mapping], volumes: set[str]) -> list[str]:
    problems, paths = [], []
    for i, mount in enumerate(mounts):
        if mount.get("name") not in volumes:
            problems.append(f"{where}[{i}].name {mount.get('name')!r} must name one of spec.template.volumes")
        paths.append(mount.get("mountPath"))
        sub = mount.get("subPath")
        if isinstance(sub, str) and (sub.startswith("/") or ".." in sub.split("/")):
            problems.append(f"{where}[{i}].subPath must be relative and must not contain a '..' segment")
    if len(set(map(repr, paths))) != len(paths):
        problems.append(f"{where} must not mount two volumes at the same mountPath")
    return problems


def template_problems(run: Mapping, allowed_host_paths: Iterable[str] = ()) -> list[str]:
    """What in spec.template would break the sharing guarantees or cannot be rendered (empty: fine)."""
    template = template_of(run)
    if not template:
        return []
    problems = []
    for field in HOST_NAMESPACES:
        if template.get(field):
            problems.append(f"spec.template.{field} is refused: a tool never shares the node's namespaces")
    volumes = _dicts(template.get("volumes"))
    names = {v.get("name") for v in volumes}
    allowed = tuple(allowed_host_paths)
    for i, volume in enumerate(volumes):
        sources = [s for s in VOLUME_SOURCES if s in volume]
        if len(sources) != 1:
            problems.append(f"spec.template.volumes[{i}] needs exactly one source: {', '.join(VOLUME_SOURCES)}")
        host = volume.get("hostPath")
        if isinstance(host, Mapping) and not host_path_allowed(host.get("path"), allowed):
            problems.append(
                f"spec.template.volumes[{i}].hostPath: {str(host.get('path'))[:256]!r} is refused: hostPath volumes "
                "reach the node's files, and the administrator allows only "
                + (", ".join(allowed) if allowed else "none") + " (TOOLSHARE_ALLOWED_HOST_PATHS)")
    problems += _mount_problems("spec.template.volumeMounts", _dicts(template.get("volumeMounts")), names)
    problems += _security_problems("spec.template.containerSecurityContext", template.get("containerSecurityContext"))
    if isinstance(template.get("securityContext"), Mapping):
        problems += _seccomp_problems("spec.template.securityContext", template["securityContext"])
    inits = _dicts(template.get("initContainers"))
    for i, init in enumerate(inits):
        where = f"spec.template.initContainers[{i}]"
        if init.get("name") in RESERVED_CONTAINERS:
            problems.append(f"{where}.name {init.get('name')!r} is one of the run's own containers")
        problems += _mount_problems(f"{where}.volumeMounts", _dicts(init.get("volumeMounts")), names)
        problems += _security_problems(f"{where}.securityContext", init.get("securityContext"))
    init_names = [c.get("name") for c in inits]
    if len(set(map(repr, init_names))) != len(init_names):
        problems.append("spec.template.initContainers names must be unique")
    return problems


def _env_references(where: str, env) -> list[Reference]:
    found = []
    for i, var in enumerate(_dicts(env)):
        source = var.get("valueFrom") if isinstance(var.get("valueFrom"), Mapping) else {}
        for key, resource in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            ref = source.get(key)
            if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
                found.append(Reference(f"{where}[{i}].valueFrom.{key}", resource, ref["name"]))
    return found


def references(run: Mapping) -> list[Reference]:
    """Every object the run's Pod would use by name: its writer must be allowed to use each."""
    spec = run.get("spec") if isinstance(run.get("spec"), Mapping) else {}
    template = template_of(run)
    found = _env_references("spec.env", spec.get("env"))
    for i, volume in enumerate(_dicts(template.get("volumes"))):
        where = f"spec.template.volumes[{i}]"
        for source, resource, key in (("persistentVolumeClaim", "persistentvolumeclaims", "claimName"),
                                      ("configMap", "configmaps", "name"), ("secret", "secrets", "secretName")):
            ref = volume.get(source)
            if isinstance(ref, Mapping) and isinstance(ref.get(key), str):
                found.append(Reference(f"{where}.{source}.{key}", resource, ref[key]))
    for i, pull in enumerate(_dicts(template.get("imagePullSecrets"))):
        if isinstance(pull.get("name"), str):
            found.append(Reference(f"spec.template.imagePullSecrets[{i}].name", "secrets", pull["name"]))
    for i, init in enumerate(_dicts(template.get("initContainers"))):
        found += _env_references(f"spec.template.initContainers[{i}].env", init.get("env"))
    account = template.get("serviceAccountName")
    if isinstance(account, str) and account and account != "default":
        found.append(Reference("spec.template.serviceAccountName", "serviceaccounts", account, "create", "token"))
    return found



def added_references(run: Mapping, old: Mapping | None) -> list[Reference]:
    """The references `run` makes that `old` (the stored object, on an update) did not: a
    reference already admitted was checked against the writer who added it."""
    before = {(r.resource, r.name, r.verb, r.subresource) for r in references(old or {})}
    return [r for r in references(run) if (r.resource, r.name, r.verb, r.subresource) not in before]
