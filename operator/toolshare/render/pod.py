"""The run's Pod: the tool container with its declared ports, no API token; with a guard
(render/guard.py) the guard container too, which then holds the HTTP endpoints' port names.

Restricted by default: the Pod passes the Kubernetes "restricted" Pod Security Standard as
rendered (non-root, RuntimeDefault seccomp, no privilege escalation, every capability dropped),
so it runs in the namespaces a careful platform enforces that in. A tool that declares a port
below 1024 (SSH on 22) binds it as its non-root user through the namespaced sysctl
net.ipv4.ip_unprivileged_port_start, which the restricted standard allows, not a capability.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from toolshare.model import CONTAINER_NAME, as_list, get, http_endpoints, spec_of, ssh_endpoints
from toolshare.podtemplate import template_of
from toolshare.render.common import child_metadata, identity
from toolshare.render.guard import render_guard
from toolshare.settings import Settings

# The user a tool runs as when nothing says otherwise: uid 1000 is the unprivileged user of the
# common tool images (Jupyter's jovyan, RStudio's rstudio, code-server's coder), and the group owns
# mounted volumes (fsGroup) so the tool can write its home.
TOOL_UID = 1000
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": TOOL_UID, "runAsGroup": TOOL_UID, "fsGroup": TOOL_UID,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
UNPRIVILEGED_PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"


# What spec.template may set, level by level: the schema prunes anything else, and the renderer
# copies no more than this either (a CRD older than the operator, a hand-edited object).
POD_SECURITY_FIELDS = ("runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "fsGroupChangePolicy",
                       "supplementalGroups", "seccompProfile")
CONTAINER_SECURITY_FIELDS = ("runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem",
                             "allowPrivilegeEscalation", "seccompProfile")
VOLUME_FIELDS = {"persistentVolumeClaim": ("claimName", "readOnly"),
                 "configMap": ("name", "items", "defaultMode", "optional"),
                 "secret": ("secretName", "items", "defaultMode", "optional"),
                 "emptyDir": ("medium", "sizeLimit"), "hostPath": ("path", "type")}
MOUNT_FIELDS = ("name", "mountPath", "subPath", "readOnly")


def _pick(obj, fields) -> dict[str, Any]:
    return {k: copy.deepcopy(obj[k]) for k in fields if isinstance(obj, Mapping) and k in obj}


def container_security(asked) -> dict[str, Any]:
    """A container's securityContext: the restricted defaults, each field replaced by the template's."""
    context: dict[str, Any] = {**CONTAINER_SECURITY, "capabilities": {"drop": ["ALL"]}, **_pick(asked, CONTAINER_SECURITY_FIELDS)}
    caps = asked.get("capabilities") if isinstance(asked, Mapping) else None
    if isinstance(caps, Mapping):
        context["capabilities"] = {"drop": list(caps.get("drop") or ["ALL"]),
                                   **({"add": list(caps["add"])} if caps.get("add") else {})}
    return context


def env_vars(env) -> list[dict[str, Any]]:
    """A container's env: plain values, or keys of Secrets and ConfigMaps (valueFrom)."""
    out = []
    for e in as_list(env):
        if not isinstance(e, Mapping) or not isinstance(e.get("name"), str):
            continue
        source = e.get("valueFrom") if isinstance(e.get("valueFrom"), Mapping) else None
        if source is not None:
            out.append({"name": e["name"], "valueFrom": _pick(source, ("secretKeyRef", "configMapKeyRef"))})
        else:
            out.append({"name": e["name"], "value": e["value"] if isinstance(e.get("value"), str) else ""})
    return out


def _resources(value) -> dict[str, Any]:
    return {k: dict(v) for k, v in (value or {}).items() if k in ("requests", "limits") and isinstance(v, Mapping)} \
        if isinstance(value, Mapping) else {}


def _volumes(template: Mapping) -> list[dict[str, Any]]:
    out = []
    for volume in as_list(template.get("volumes")):
        if isinstance(volume, Mapping) and isinstance(volume.get("name"), str):
            out.append({"name": volume["name"], **{source: _pick(volume[source], fields)
                                                    for source, fields in VOLUME_FIELDS.items() if source in volume}})
    return out


def _mounts(mounts) -> list[dict[str, Any]]:
    return [_pick(m, MOUNT_FIELDS) for m in as_list(mounts) if isinstance(m, Mapping)]


def _init_container(init: Mapping) -> dict[str, Any]:
    container: dict[str, Any] = {"name": init.get("name"), "image": init.get("image")}
    for field in ("command", "args"):
        if (values := as_list(init.get(field))) and all(isinstance(v, str) for v in values):
            container[field] = values
    if isinstance(init.get("workingDir"), str):
        container["workingDir"] = init["workingDir"]
    if (env := env_vars(init.get("env"))):
        container["env"] = env
    if (resources := _resources(init.get("resources"))):
        container["resources"] = resources
    if (mounts := _mounts(init.get("volumeMounts"))):
        container["volumeMounts"] = mounts
    container["securityContext"] = container_security(init.get("securityContext"))
    return container


def pod_security(run: Mapping) -> dict[str, Any]:
    """The Pod's securityContext: the restricted defaults, each field replaced by the template's,
    and the sysctl that lets the non-root tool bind the lowest port it declares."""
    context: dict[str, Any] = {**POD_SECURITY, "seccompProfile": dict(POD_SECURITY["seccompProfile"]),
                               **_pick(template_of(run).get("securityContext"), POD_SECURITY_FIELDS)}
    low = [ep.port for ep in http_endpoints(run) + ssh_endpoints(run) if ep.port < 1024]
    if low:
        context["sysctls"] = [{"name": UNPRIVILEGED_PORT_SYSCTL, "value": str(min(low))}]
    return context


def render_pod(run: Mapping, settings: Settings | None = None) -> dict:
    name, namespace, _ = identity(run)
    guarded = settings is not None and settings.guarded
    spec = spec_of(run)
    template = template_of(run)
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": spec.get("image"),
                                 "securityContext": container_security(template.get("containerSecurityContext"))}
    for field in ("command", "args"):
        values = as_list(spec.get(field))
        if values and all(isinstance(v, str) for v in values):
            container[field] = values
    if (env := env_vars(spec.get("env"))):
        container["env"] = env
    if (resources := _resources(get(spec, "resources"))):
        container["resources"] = resources
    if (mounts := _mounts(template.get("volumeMounts"))):
        container["volumeMounts"] = mounts
    ports = sorted(http_endpoints(run) + ssh_endpoints(run), key=lambda ep: ep.name)
    if ports:
        # Guarded, an HTTP endpoint's name is the guard's port (the Service targets it by name).
        container["ports"] = [{"containerPort": ep.port, "protocol": "TCP"}
                              if guarded and ep.protocol != "ssh" else
                              {"name": ep.name, "containerPort": ep.port, "protocol": "TCP"} for ep in ports]
    http = http_endpoints(run)
    if http:
        # Ready (so ToolReady, and the Service's endpoints) once the tool answers on its first
        # HTTP port, not the moment its process starts: a sharee sent the link too early would
        # get the router's 502.
        container["readinessProbe"] = {"tcpSocket": {"port": http[0].port}, "periodSeconds": 5,
                                       "timeoutSeconds": 2, "successThreshold": 1, "failureThreshold": 3}
    pod_spec: dict[str, Any] = {
        "containers": [container, *([render_guard(run, namespace, name, settings)] if guarded else [])],
        # A shared tool has no business talking to the Kubernetes API, unless its template asks.
        "automountServiceAccountToken": template.get("automountServiceAccountToken") is True,
        "enableServiceLinks": False,
        "securityContext": pod_security(run),
    }
    inits = [_init_container(c) for c in as_list(template.get("initContainers")) if isinstance(c, Mapping)]
    if inits:
        pod_spec["initContainers"] = inits
    if (volumes := _volumes(template)):
        pod_spec["volumes"] = volumes
    if isinstance(template.get("serviceAccountName"), str):
        pod_spec["serviceAccountName"] = template["serviceAccountName"]
    for field in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        if template.get(field):
            pod_spec[field] = copy.deepcopy(template[field])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": child_metadata(run, name), "spec": pod_spec}

