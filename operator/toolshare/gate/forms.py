"""The page's forms, turned into the API requests that carry them out: pure.

Every value from a form passes the same grammar as the CLI's (sharing.py, principals.py) before
it can become part of a request, and every request is an ordinary RunShare or ImageShare write
that the gate then sends as the signed-in person (gate/writes.py), so RBAC and admission decide
as for kubectl. A change to a stored share is conditional on the spec the page showed (its
metadata.generation, which only a spec change moves, not the operator's status writes): a JSON
patch that tests it, or a delete with the uid and resourceVersion preconditions of the share as
the gate holds it once it checked the generation: a share changed in the meantime is refused,
never overwritten.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from toolshare import model, sharing
from toolshare.principals import is_dns_label
from toolshare.sharing import ShareInputError

FIELD_MANAGER = "toolshare-page"
API = f"/apis/{model.GROUP}/{model.VERSION}"
MAX_IMAGE_LENGTH = 512
_SEPARATOR = re.compile(r" *, *")
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$", re.IGNORECASE)
# The labels of each field, as the page shows them: a refusal names the field the person typed in.
LABELS = {"users": "Users", "groups": "Groups", "endpoints": "Endpoints", "expires": "Expires",
          "image": "Image", "namespace": "Namespace", "run": "Run"}


@dataclass(frozen=True)
class Write:
    method: str  # POST, PATCH or DELETE
    path: str  # with the query (fieldManager)
    body: object
    what: str  # for the page: "share lab with bob"
    plural: str  # runshares or imageshares
    namespace: str
    name: str | None  # None: created with generateName, named by the API server
    content_type: str = "application/json"


def names(text: object, field: str) -> list[str]:
    """A users or groups box: names separated by commas, with spaces around them if you like, each
    checked against the principal grammar as it stands. Nothing else separates names or is
    trimmed: a new line or a tab is part of a name, and refused with it."""
    if not isinstance(text, str) or not text.strip(" "):
        return []
    found = _SEPARATOR.split(text.strip(" "))
    if "" in found:
        raise ShareInputError(f"{LABELS[field]}: an empty name between commas (separate names with one comma)")
    if len(found) > model.MAX_PRINCIPALS:
        raise ShareInputError(f"{LABELS[field]}: at most {model.MAX_PRINCIPALS} names")
    return sharing.check_principals(LABELS[field], dict.fromkeys(found))


def _not_managed(obj: Mapping) -> None:
    if tool := sharing.managed_by(obj):
        raise ShareInputError(f"{obj.get('kind', 'this share')} {obj['metadata']['name']!r} is managed by {tool}: "
                              f"change it where {tool} reads it from (its Git repository or chart)")


def _collection(plural: str, namespace: str) -> str:
    return f"{API}/namespaces/{quote(namespace, safe='')}/{plural}"


def _item(plural: str, namespace: str, name: str) -> str:
    return f"{_collection(plural, namespace)}/{quote(name, safe='')}"


def add_run_share(form: Mapping[str, object], run: Mapping, taken: Callable[[str], bool], now: dt.datetime) -> Write:
    """The Add form of a run: a new RunShare for the users and groups, on the endpoints ticked
    (none ticked: all of the run's HTTP endpoints), until the expiry if one is given."""
    namespace, run_name = run["metadata"]["namespace"], run["metadata"]["name"]
    users, groups = names(form.get("users"), "users"), names(form.get("groups"), "groups")
    offered = {e.name for e in model.http_endpoints(run)}
    endpoints = [e for e in _values(form.get("endpoints")) if e]
    for ep in endpoints:
        if ep not in offered:
            raise ShareInputError(f"{LABELS['endpoints']} {ep[:64]!r}: {run_name} has no HTTP endpoint of that name "
                                  "(SSH is never shared)")
    sharing.check_run_share(run_name, users, groups, endpoints, fields={
        "run": LABELS["run"], "users": LABELS["users"], "groups": LABELS["groups"], "endpoints": LABELS["endpoints"]})
    expires = form.get("expires")
    expires_at = (sharing.parse_expiry(expires, now, field=LABELS["expires"])
                  if isinstance(expires, str) and expires.strip() else None)
    name = sharing.share_name(run_name, endpoints)
    body = sharing.desired_share(name, namespace, run_name, users, groups, endpoints, expires_at)
    if taken(name):  # one more share of the same endpoints: its own object, named by the server
        body["metadata"] = {"generateName": f"{name[:57]}-", "namespace": namespace}
        name = None
    who = ", ".join([*users, *(f"group {g}" for g in groups)])
    return Write("POST", f"{_collection('runshares', namespace)}?fieldManager={FIELD_MANAGER}", body,
                 f"share {run_name} with {who}", "runshares", namespace, name)


def remove(share: Mapping, kind: str, principal: str) -> Write:
    """Take one user or group out of a share (RunShare or ImageShare); the share goes when no one
    is left in it."""
    _not_managed(share)
    plural = "runshares" if share.get("kind") == "RunShare" else "imageshares"
    meta = share["metadata"]
    kept = sharing.without_principal(share, kind, principal)
    if kept is None:
        return delete(share, what=f"stop sharing with {principal}")
    users, groups = kept
    ops: list[dict] = [{"op": "test", "path": "/metadata/generation", "value": meta["generation"]}]
    for field, values in (("users", users), ("groups", groups)):
        if values != list((share.get("spec") or {}).get(field) or []):
            ops.append({"op": "replace", "path": f"/spec/{field}", "value": values} if values
                       else {"op": "remove", "path": f"/spec/{field}"})
    return Write("PATCH", f"{_item(plural, meta['namespace'], meta['name'])}?fieldManager={FIELD_MANAGER}", ops,
                 f"stop sharing with {principal}", plural, meta["namespace"], meta["name"],
                 content_type="application/json-patch+json")


def delete(share: Mapping, what: str | None = None) -> Write:
    _not_managed(share)
    plural = "runshares" if share.get("kind") == "RunShare" else "imageshares"
    meta = share["metadata"]
    body = {"apiVersion": "v1", "kind": "DeleteOptions",
            "preconditions": {"uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}}
    return Write("DELETE", _item(plural, meta["namespace"], meta["name"]), body,
                 what or f"delete {share.get('kind')} {meta['name']}", plural, meta["namespace"], meta["name"])


def add_image_share(form: Mapping[str, object], owner: str) -> Write:
    """The Share-an-image form: an ImageShare by the signed-in owner (admission says whether the
    image is theirs to share: the claim and the administrator's image rules)."""
    image = form.get("image")
    image = image.strip() if isinstance(image, str) else ""
    if not image or len(image) > MAX_IMAGE_LENGTH or not _IMAGE_RE.fullmatch(image):
        raise ShareInputError(f"{LABELS['image']} {image[:80]!r}: an image reference such as "
                              "registry.example.org/team/lab or registry.example.org/team/lab:4.2 "
                              f"(letters, digits and . _ / : @ -, at most {MAX_IMAGE_LENGTH} characters)")
    namespace = form.get("namespace")
    namespace = namespace.strip() if isinstance(namespace, str) else ""
    if not is_dns_label(namespace):
        raise ShareInputError(f"{LABELS['namespace']} {namespace[:80]!r}: a namespace name (lower-case letters, "
                              "digits and -, at most 63 characters)")
    users, groups = names(form.get("users"), "users"), names(form.get("groups"), "groups")
    if not users and not groups:
        raise ShareInputError(f"give at least one user ({LABELS['users']}) or group ({LABELS['groups']})")
    last = re.sub(r"[^a-z0-9-]+", "-", image.split("@")[0].rsplit("/", 1)[-1].split(":")[0].lower()).strip("-")
    spec: dict = {"image": image, "owner": owner}
    if users:
        spec["users"] = users
    if groups:
        spec["groups"] = groups
    body = {"apiVersion": model.API_VERSION, "kind": "ImageShare",
            "metadata": {"generateName": f"{(last or 'image')[:40]}-", "namespace": namespace}, "spec": spec}
    who = ", ".join([*users, *(f"group {g}" for g in groups)])
    return Write("POST", f"{_collection('imageshares', namespace)}?fieldManager={FIELD_MANAGER}", body,
                 f"share image {image} with {who}", "imageshares", namespace, None)


def _values(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []
