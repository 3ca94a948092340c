"""`toolshare share | unshare | list` (also `kubectl toolshare ...`): RunShares by server-side apply.

Everything these commands do is an ordinary RunShare written under the field manager
`kubectl-toolshare`, so GitOps tools see it like any other object. Shares made here get a
deterministic name from (run, endpoints) so repeating a command changes nothing, and adding a
user to an existing share is an apply of the same object with one more list item.

The namespace is -n, else the kubeconfig's current context's, else "default" (as kubectl). Every
refusal is one line on stderr naming what was refused and the API server's reason, exit code 1.

`list --shared-with-me` asks the gate (GET /api/shared-with-me with your bearer token), which
knows what is shared with you in every namespace, whatever you may read: the gate's URL is
--gate, else $TOOLSHARE_GATE_PUBLIC_URL, else (in `make run`) access/urls.json in the cluster
directory next to the kubeconfig; the token is $TOOLSHARE_TOKEN. Without a gate it lists the
RunShares naming you that you may read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import kubernetes
import urllib3

from toolshare.client.kube import ApiError, Kube
from toolshare.sharing import (ShareInputError, check_principals, check_run_share, desired_share, parse_expiry,
                               share_name)

FIELD_MANAGER = "kubectl-toolshare"
# Stamped by Toolshare's admission webhook with the requester; shown, never written, here.
ANN_SHARED_BY = "toolshare.dev/shared-by"
API = "toolshare.dev/v1alpha1"


UsageError = ShareInputError  # bad command-line input; the message names the option


class Refused(Exception):
    """The API server or the gate said no, or could not be reached: one line, what and why."""


class refusing:
    """`with refusing("read RunShare lab/x"):` turns an ApiError into Refused(what: why)."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if isinstance(error, ApiError):
            raise Refused(f"the API server refused to {self.what}: {error.status_message}") from error
        return False


# --- talking to the API server ---------------------------------------------------------------


def kubeconfig_path(kubeconfig: str | None) -> Path:
    """The kubeconfig file in use: --kubeconfig, else the first of $KUBECONFIG, else ~/.kube/config."""
    if kubeconfig:
        return Path(kubeconfig).expanduser()
    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return Path(paths[0] if paths else "~/.kube/config").expanduser()


def context_of(kubeconfig: str | None) -> dict:
    """The current context's `context` map (namespace, user, cluster) of the kubeconfig in use."""
    _, current = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
    return (current or {}).get("context") or {}


def connect(kubeconfig: str | None) -> tuple[Kube, str]:
    """A client for the kubeconfig (default: $KUBECONFIG, ~/.kube/config) and its namespace: the
    current context's, else "default", as kubectl."""
    try:
        client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        namespace = context_of(kubeconfig).get("namespace") or "default"
    except kubernetes.config.ConfigException as e:
        raise Refused(f"no usable kubeconfig ({kubeconfig_path(kubeconfig)}): {' '.join(str(e).split())}") from e
    return Kube(client, FIELD_MANAGER), namespace


def whoami(kube: Kube) -> tuple[str, list[str]]:
    with refusing("say who you are (SelfSubjectReview)"):
        review = kube.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                              body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    info = (review.get("status") or {}).get("userInfo") or {}
    return info.get("username", ""), list(info.get("groups") or [])


def _shares(kube: Kube, namespace: str | None) -> list[dict]:
    path = (f"/apis/toolshare.dev/v1alpha1/namespaces/{namespace}/runshares" if namespace
            else "/apis/toolshare.dev/v1alpha1/runshares")
    with refusing(f"list RunShares in namespace {namespace}" if namespace else "list RunShares in all namespaces"):
        return kube.request("GET", path).get("items") or []


def run_exists(kube: Kube, namespace: str, run: str) -> bool | None:
    """Whether the ToolRun exists; None when we may not tell (not allowed to read it)."""
    try:
        kube.request("GET", f"/apis/toolshare.dev/v1alpha1/namespaces/{namespace}/toolruns/{run}")
        return True
    except ApiError as e:
        return False if e.status == 404 else None


def share(kube: Kube, namespace: str, run: str, users: list[str], groups: list[str],
          endpoints: list[str], expires: str | None, name: str | None = None,
          now: dt.datetime | None = None) -> tuple[dict, bool | None]:
    """Apply the share; (the applied RunShare, whether the run exists: None if we may not read it)."""
    check_run_share(run, users, groups, endpoints)
    now = now or dt.datetime.now(dt.timezone.utc)
    expires_at = parse_expiry(expires, now) if expires else None
    name = name or share_name(run, endpoints)
    exists = run_exists(kube, namespace, run)
    existing = _get_share(kube, namespace, name)
    if existing is not None:  # add to what this share already grants: apply is declarative
        spec = existing.get("spec") or {}
        users, groups = users + list(spec.get("users") or []), groups + list(spec.get("groups") or [])
        expires_at = expires_at or spec.get("expiresAt")
    with refusing(f"apply RunShare {namespace}/{name}"):
        return kube.apply(desired_share(name, namespace, run, users, groups, endpoints, expires_at)), exists


def _get_share(kube: Kube, namespace: str, name: str) -> dict | None:
    try:
        with refusing(f"read RunShare {namespace}/{name}"):
            return kube.request("GET", f"/apis/toolshare.dev/v1alpha1/namespaces/{namespace}/runshares/{name}")
    except Refused as e:
        if isinstance(e.__cause__, ApiError) and e.__cause__.status == 404:
            return None
        raise


def _delete_share(kube: Kube, namespace: str, name: str) -> None:
    with refusing(f"delete RunShare {namespace}/{name}"):
        kube.delete(API, "RunShare", namespace, name)


def unshare(kube: Kube, namespace: str, run: str | None, users: list[str], groups: list[str],
            name: str | None = None) -> list[str]:
    """Remove users/groups from the run's shares (all of them if none given); say what changed."""
    check_principals("--user", users)
    check_principals("--group", groups)
    if name:
        _delete_share(kube, namespace, name)
        return [f"runshare/{name} deleted"]
    if not run:
        raise UsageError("give RUN or --name SHARE")
    done = []
    for s in _shares(kube, namespace):
        spec = s.get("spec") or {}
        if (spec.get("runRef") or {}).get("name") != run:
            continue
        sname = s["metadata"]["name"]
        keep_users = [u for u in spec.get("users") or [] if u not in users]
        keep_groups = [g for g in spec.get("groups") or [] if g not in groups]
        if not users and not groups or not keep_users and not keep_groups:
            _delete_share(kube, namespace, sname)
            done.append(f"runshare/{sname} deleted")
        elif (keep_users, keep_groups) != (spec.get("users") or [], spec.get("groups") or []):
            with refusing(f"apply RunShare {namespace}/{sname}"):
                kube.apply(desired_share(sname, namespace, run, keep_users, keep_groups,
                                         spec.get("endpoints") or [], spec.get("expiresAt")))
            done.append(f"runshare/{sname} updated")
    return done


def shared_with_me(kube: Kube, namespace: str) -> list[dict]:
    """Without a gate: active RunShares naming the caller or one of their groups, cluster-wide if
    they may list that, else in `namespace`."""
    user, groups = whoami(kube)
    try:
        items = _shares(kube, None)
    except Refused as e:
        if not (isinstance(e.__cause__, ApiError) and e.__cause__.status == 403):
            raise
        items = _shares(kube, namespace)
    return [s for s in items if _names(s, user, groups) and _active(s)]


# --- the gate's "Shared with me" ---------------------------------------------------------------

GATE_ENV, TOKEN_ENV = "TOOLSHARE_GATE_PUBLIC_URL", "TOOLSHARE_TOKEN"


def find_gate(flag: str | None, kubeconfig: str | None) -> tuple[str, str] | None:
    """(gate URL, where it came from): --gate, $TOOLSHARE_GATE_PUBLIC_URL, or the file `make run`
    keeps in the cluster directory next to the kubeconfig; None when none says."""
    if flag:
        return flag.rstrip("/"), "--gate"
    if os.environ.get(GATE_ENV):
        return os.environ[GATE_ENV].rstrip("/"), f"${GATE_ENV}"
    from toolshare.local.stack import read_urls, urls_file

    directory = kubeconfig_path(kubeconfig).parent
    if gate := read_urls(directory).get("gate"):
        return gate, str(urls_file(directory))
    return None


def ask_gate(gate: str, source: str, token: str, timeout: float = 15.0) -> dict:
    """GET <gate>/api/shared-with-me as the bearer of `token`."""
    request = urllib.request.Request(f"{gate}/api/shared-with-me",
                                     headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    where = f"the gate at {gate} (from {source})"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")
        try:
            reason = json.loads(body).get("error") or body
        except (ValueError, AttributeError):
            reason = body
        reason = " ".join(reason.split()) or e.reason
        hint = f": is ${TOKEN_ENV} a current token for you?" if e.code == 401 else ""
        raise Refused(f"{where} refused to say what is shared with you ({e.code}): {reason}{hint}") from e
    except (urllib.error.URLError, OSError) as e:
        raise Refused(f"cannot reach {where}: {getattr(e, 'reason', e)}") from e
    except ValueError as e:
        raise Refused(f"{where} did not answer JSON: {e}") from e


def gate_rows(view: Mapping) -> list[dict]:
    """One row per share that reaches the caller, from the gate's answer."""
    rows = []
    for run in view.get("sharedWithMe") or []:
        urls = ",".join(e.get("url") or e.get("name", "") for e in run.get("endpoints") or [])
        for share in run.get("shares") or [{}]:
            rows.append({"namespace": run.get("namespace", ""), "share": share.get("name") or "-",
                         "run": run.get("name", ""), "owner": run.get("owner") or "-",
                         "via": share.get("via") or "-", "sharedBy": share.get("sharedBy") or "-",
                         "expires": share.get("expiresAt") or "never", "urls": urls or "-"})
    return rows


def gate_table(view: Mapping) -> str:
    head = ["NAMESPACE", "NAME", "RUN", "OWNER", "VIA", "SHARED-BY", "EXPIRES", "URL"]
    keys = ["namespace", "share", "run", "owner", "via", "sharedBy", "expires", "urls"]
    rows = sorted(([r[k] for k in keys] for r in gate_rows(view)), key=lambda r: (r[0], r[2], r[1]))
    return _columns([head] + rows)


def _names(share: Mapping, user: str, groups: list[str]) -> bool:
    spec = share.get("spec") or {}
    return user in (spec.get("users") or []) or bool(set(spec.get("groups") or []) & set(groups))


def _active(share: Mapping) -> bool:
    conditions = (share.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def table(shares: list[dict], all_namespaces: bool) -> str:
    rows = [(["NAMESPACE"] if all_namespaces else []) + ["NAME", "RUN", "USERS", "GROUPS", "ENDPOINTS", "EXPIRES", "SHARED-BY"]]
    for s in sorted(shares, key=lambda s: (s["metadata"].get("namespace", ""), s["metadata"]["name"])):
        spec, meta = s.get("spec") or {}, s["metadata"]
        rows.append(([meta.get("namespace", "")] if all_namespaces else []) + [
            meta["name"], (spec.get("runRef") or {}).get("name") or "<selector>",
            ",".join(spec.get("users") or []) or "-", ",".join(spec.get("groups") or []) or "-",
            ",".join(spec.get("endpoints") or []) or "all", spec.get("expiresAt") or "never",
            (meta.get("annotations") or {}).get(ANN_SHARED_BY) or "-"])
    return _columns(rows)


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _granted(obj: Mapping) -> str:
    spec = obj.get("spec") or {}
    return (", ".join(list(spec.get("users") or []) + ["group:" + g for g in spec.get("groups") or []])
            + (f" until {spec['expiresAt']}" if spec.get("expiresAt") else ""))


def _list_shared_with_me(args) -> None:
    found = find_gate(args.gate, args.kubeconfig)
    if found is None:
        print(f"toolshare list: no gate known (--gate or ${GATE_ENV}): listing the RunShares naming you "
              "that you may read", file=sys.stderr)
        kube, namespace = connect(args.kubeconfig)
        print(table(shared_with_me(kube, args.namespace or namespace), all_namespaces=True))
        return
    gate, source = found
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        hint = ""
        if source.endswith("urls.json"):  # make run: the dev issuer mints tokens
            user = context_of(args.kubeconfig).get("user") or "USER"
            hint = f" (here: export {TOKEN_ENV}=$(toolshare dev token {user}))"
        raise UsageError(f"--shared-with-me asks the gate at {gate} (from {source}), which needs your "
                         f"bearer token in ${TOKEN_ENV}{hint}")
    print(gate_table(ask_gate(gate, source, token)))


def run_command(args) -> int:
    try:
        if args.command == "list" and args.shared_with_me:
            _list_shared_with_me(args)
            return 0
        kube, default_ns = connect(args.kubeconfig)
        namespace = args.namespace or default_ns
        if args.command == "share":
            obj, exists = share(kube, namespace, args.run, args.user, args.group, args.endpoint, args.expires,
                                args.name)
            name = obj["metadata"]["name"]
            if exists is False:
                print(f"toolshare share: warning: there is no ToolRun {args.run!r} in namespace {namespace!r}: "
                      f"runshare/{name} is applied ({_granted(obj)}) but grants nothing until that run "
                      "exists (RunNotFound)", file=sys.stderr)
            else:
                print(f"runshare/{name} applied in {namespace}: {_granted(obj)}")
        elif args.command == "unshare":
            done = unshare(kube, namespace, args.run, args.user, args.group, args.name)
            print("\n".join(done) or f"nothing shares {args.run} with those principals in {namespace}")
        elif args.command == "list":
            print(table(_shares(kube, namespace), all_namespaces=False))
        return 0
    except UsageError as e:
        print(f"toolshare {args.command}: {e}", file=sys.stderr)
        return 2
    except Refused as e:
        print(f"toolshare {args.command}: {e}", file=sys.stderr)
        return 1
    except ApiError as e:  # a request no `refusing` names: still one line
        print(f"toolshare {args.command}: the API server refused: {e.status_message}", file=sys.stderr)
        return 1
    except (urllib3.exceptions.HTTPError, OSError) as e:
        print(f"toolshare {args.command}: cannot reach the API server: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
