"""The tool's own state, read from its Pod: a ToolRun's ToolReady condition. Pure.

`Ready` says the operator has put the run's children in line with the run and its shares;
`ToolReady` says whether the tool itself runs: True (reason `Running`) once the Pod's own Ready
condition is True, otherwise False with the most telling reason, as `kubectl get pods` would
print it, and a message that names the container and its image:

  PodMissing          no Pod (not created yet, or the run's spec is invalid)
  PodRefused          the API server refused the Pod (its Pod Security admission, a quota):
                      "Pod X cannot be created: <the API server's message>"
  PodTerminating      the Pod is being deleted (replaced after a spec change)
  PodPending          not scheduled yet, or scheduled and waiting for the kubelet
  Unschedulable       the scheduler cannot place it (its PodScheduled reason, e.g. SchedulingGated)
  PodInitializing     an init container runs; Init:<reason> when one fails (Init:CrashLoopBackOff)
  ContainerCreating   the kubelet is creating the container
  ImagePullBackOff, ErrImageNeverPull, InvalidImageName, ...
                      "image X of container tool cannot be pulled: <the kubelet's message>"
  CrashLoopBackOff    "container tool (image X) exited with code N (Error) and is restarting"
  Error, Completed, OOMKilled, ...
                      the container has terminated (its first time; then CrashLoopBackOff)
  CreateContainerConfigError, RunContainerError, ...
                      the container cannot start (the kubelet's reason and message)
  ContainersNotReady  running, not ready (a readiness probe or gate)
  Evicted, PodFailed, PodSucceeded, PodUnknown
                      the Pod as a whole has ended or its node is not reporting

The kubelet retries a failing pull or a crashing container forever, and its own reasons alternate
on every try (ErrImagePull / ImagePullBackOff, Error / CrashLoopBackOff) while restart counts grow.
Each alternation here would be a status write, forever, and would move the run's resourceVersion
under anyone waiting for it to settle; so both halves of a cycle have one reason and one message
(restarts are not counted while it crashes), and the back-off half, which has no error text, keeps
the message the previous condition had (`previous`).

Everything is read defensively (any shape of status gives an answer, never an exception), and
every text is one line and bounded, so a container's crash output cannot bloat the status.
`project_pod_status` keeps exactly what `tool_condition` reads, for the operator's cache: the
condition computed from the kept fields is the one computed from the whole Pod.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, NamedTuple

from toolshare.model import CONTAINER_NAME

TOOL_READY = "ToolReady"
MESSAGE_LIMIT = 1024  # the whole condition message
TEXT_LIMIT = 512  # one message taken from the Pod (the kubelet's, a termination message)
NAME_LIMIT = 256  # a container name or image
REASON_LIMIT = 64

RUNNING, CONTAINERS_NOT_READY = "Running", "ContainersNotReady"
POD_MISSING, POD_TERMINATING, POD_PENDING, POD_UNKNOWN = "PodMissing", "PodTerminating", "PodPending", "PodUnknown"
POD_REFUSED = "PodRefused"
UNSCHEDULABLE, POD_INITIALIZING, CONTAINER_CREATING = "Unschedulable", "PodInitializing", "ContainerCreating"
CRASH_LOOP = "CrashLoopBackOff"
PULL_BACK_OFF = "ImagePullBackOff"
PULL_CYCLE = frozenset({"ErrImagePull", PULL_BACK_OFF})  # the kubelet alternates between them
IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                           "ImageInspectError", "RegistryUnavailable", "SignatureValidationFailed"})
# Waiting for something normal, not an error.
BENIGN_WAITING = frozenset({CONTAINER_CREATING, POD_INITIALIZING, ""})
# The Pod conditions read here.
POD_CONDITIONS = ("PodScheduled", "Initialized", "Ready")

# A condition reason, as metav1.Condition validates it.
_REASON_RE = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


class ToolCondition(NamedTuple):
    ready: bool
    reason: str
    message: str


def clean(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Text as one bounded line: control characters dropped, whitespace runs made one space,
    cut at `limit` characters with an ellipsis. Idempotent; "" for anything but a string."""
    if not isinstance(value, str):
        return ""
    text = "".join(ch for ch in value if ch.isspace() or unicodedata.category(ch)[0] != "C")
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def clean_reason(value: Any) -> str:
    """A reason usable in a condition (CamelCase, as metav1.Condition allows), or ""."""
    return value if isinstance(value, str) and len(value) <= REASON_LIMIT and _REASON_RE.match(value) else ""


def _map(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _conditions(status: Mapping) -> dict[str, Mapping]:
    found: dict[str, Mapping] = {}
    for cond in _list(status.get("conditions")):
        if cond.get("type") in POD_CONDITIONS:
            found.setdefault(cond["type"], cond)
    return found


def _with(text: str, detail: str) -> str:
    return f"{text}: {detail}" if detail else text


def _exit(terminated: Mapping) -> tuple[str, str]:
    """(reason, "exited with code N (reason)") of a terminated state."""
    code, signal = _int(terminated.get("exitCode")), _int(terminated.get("signal"))
    reason = clean_reason(terminated.get("reason")) or ("Completed" if code == 0 else "Error")
    how = f"exited with code {code}" if code is not None else "exited"
    if signal:
        how += f" (signal {signal})"
    return reason, f"{how} ({reason})"


def _container(cs: Mapping, init: bool) -> tuple[int, ToolCondition]:
    """How bad one container's state is (0 running and ready, or an init container done; 1 running,
    not ready; 2 waiting to start; 3 terminated; 4 failing to start) and what to say about it."""
    kind = "init container" if init else "container"
    name, image = clean(cs.get("name"), NAME_LIMIT) or "?", clean(cs.get("image"), NAME_LIMIT) or "?"
    who = f"{kind} {name} (image {image})"
    restarts = _int(cs.get("restartCount")) or 0
    counted = f"; restarts={restarts}" if restarts else ""
    state = _map(cs.get("state"))
    last = _map(cs.get("lastState")).get("terminated")
    if "waiting" in state:
        waiting = _map(state["waiting"])
        reason, said = clean_reason(waiting.get("reason")), clean(waiting.get("message"))
        if reason in PULL_CYCLE:  # the error text is only on ErrImagePull; see `previous`
            return 4, ToolCondition(False, PULL_BACK_OFF, _with(
                f"image {image} of {kind} {name} cannot be pulled", said if reason != PULL_BACK_OFF else ""))
        if reason in IMAGE_REASONS:
            return 4, ToolCondition(False, reason, _with(f"image {image} of {kind} {name} cannot be pulled",
                                                         said or reason))
        if reason == CRASH_LOOP:
            return 4, _crashing(who, last)
        if reason in BENIGN_WAITING:
            what = "waits for the init containers" if reason == POD_INITIALIZING else "is being created"
            return 2, ToolCondition(False, reason or CONTAINER_CREATING, f"{who} {what}{counted}")
        return 4, ToolCondition(False, reason, _with(f"{who} cannot start{counted}", said))
    if "terminated" in state:
        terminated = _map(state["terminated"])
        reason, how = _exit(terminated)
        if init and reason == "Completed":
            return 0, ToolCondition(True, reason, f"{who} {how}")
        if restarts:  # between two tries of a crash loop: the same condition as the back-off half
            return 4, _crashing(who, terminated)
        return 3, ToolCondition(False, reason, _with(f"{who} {how}{counted}", clean(terminated.get("message"))))
    if "running" in state:
        if cs.get("ready") is True:
            return 0, ToolCondition(True, RUNNING, f"{who} is running and ready{counted}")
        what = "is running" if init else "is running but not ready"
        return 1, ToolCondition(False, CONTAINERS_NOT_READY, f"{who} {what}{counted}")
    return 2, ToolCondition(False, CONTAINER_CREATING, f"{who} has not started yet")


def _crashing(who: str, last: Any) -> ToolCondition:
    if isinstance(last, Mapping):
        return ToolCondition(False, CRASH_LOOP, _with(f"{who} {_exit(last)[1]} and is restarting",
                                                      clean(last.get("message"))))
    return ToolCondition(False, CRASH_LOOP, f"{who} keeps crashing and is restarting")


def _worst(statuses: list[Mapping], init: bool) -> tuple[int, ToolCondition] | None:
    judged = [(_container(cs, init), clean(cs.get("name"), NAME_LIMIT) != CONTAINER_NAME, i)
              for i, cs in enumerate(statuses)]
    if not judged:
        return None
    # The worst state; among equals the tool's own container, then the first listed.
    return min(judged, key=lambda j: (-j[0][0], j[1], j[2]))[0]


def tool_condition(pod: Mapping | None, pod_name: str = "", why: str = "",
                   previous: Mapping | None = None, refused: str = "") -> ToolCondition:
    """The ToolReady condition of a run whose Pod is `pod` (None: it has none; `why` may say why).
    `previous` is the run's current ToolReady condition: the back-off half of a failing pull keeps
    its message (the error the other half said), so a retry cycle costs no status write.
    `refused` is the API server's refusal of the Pod's last write, if it was refused."""
    if refused and not isinstance(pod, Mapping):
        return ToolCondition(False, POD_REFUSED, clean(f"Pod {clean(pod_name, NAME_LIMIT)} cannot be created: "
                                                       f"{clean(refused, TEXT_LIMIT)}", MESSAGE_LIMIT))
    cond = _tool_condition(pod, pod_name, why)
    cond = cond._replace(message=clean(cond.message, MESSAGE_LIMIT))
    if (cond.reason == PULL_BACK_OFF and isinstance(previous, Mapping) and previous.get("reason") == PULL_BACK_OFF
            and isinstance(previous.get("message"), str) and previous["message"].startswith(cond.message)):
        return cond._replace(message=clean(previous["message"], MESSAGE_LIMIT))
    return cond


def _tool_condition(pod: Mapping | None, pod_name: str, why: str) -> ToolCondition:
    if not isinstance(pod, Mapping):
        return ToolCondition(False, POD_MISSING, _with(f"Pod {clean(pod_name, NAME_LIMIT)} does not exist", why))
    meta, status = _map(pod.get("metadata")), _map(pod.get("status"))
    name = clean(meta.get("name"), NAME_LIMIT) or clean(pod_name, NAME_LIMIT)
    if meta.get("deletionTimestamp"):
        return ToolCondition(False, POD_TERMINATING, f"Pod {name} is being deleted")
    phase = status.get("phase")
    pod_reason, pod_message = clean_reason(status.get("reason")), clean(status.get("message"))
    if phase in ("Failed", "Succeeded") and pod_reason:  # Evicted, Shutdown, Terminated...
        return ToolCondition(False, pod_reason, _with(f"Pod {name} has {phase.lower()} ({pod_reason})", pod_message))
    if phase == "Unknown":
        return ToolCondition(False, POD_UNKNOWN, _with(f"the node of Pod {name} does not report its state",
                                                       pod_message))
    conditions = _conditions(status)
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        reason = clean_reason(scheduled.get("reason")) or UNSCHEDULABLE
        return ToolCondition(False, reason, _with(f"Pod {name} cannot be scheduled", clean(scheduled.get("message"))))
    if (conditions.get("Initialized") or {}).get("status") == "False":
        init = _list(status.get("initContainerStatuses"))
        judged = [_container(cs, init=True) for cs in init]
        worst = _worst(init, init=True)
        if worst is not None and worst[0] >= 3:
            return ToolCondition(False, f"Init:{worst[1].reason}", worst[1].message)
        done = sum(1 for severity, _ in judged if severity == 0)
        pending = next((said.message for severity, said in judged if severity != 0), "")
        return ToolCondition(False, POD_INITIALIZING,
                             _with(f"Pod {name} is initializing ({done}/{len(init)} init containers done)", pending))
    worst = _worst(_list(status.get("containerStatuses")), init=False)
    if worst is None:
        if phase == "Failed":
            return ToolCondition(False, "PodFailed", _with(f"Pod {name} has failed", pod_message))
        if phase == "Succeeded":
            return ToolCondition(False, "PodSucceeded", _with(f"Pod {name} has completed", pod_message))
        if scheduled.get("status") == "True":
            return ToolCondition(False, POD_PENDING, f"Pod {name} is scheduled and waits for its containers to start")
        return ToolCondition(False, POD_PENDING, f"Pod {name} waits to be scheduled to a node")
    severity, said = worst
    if severity == 0:
        ready = conditions.get("Ready") or {}
        if ready.get("status") == "True":
            return said
        return ToolCondition(False, CONTAINERS_NOT_READY, _with(f"Pod {name} is not ready yet",
                                                                 clean(ready.get("message"))))
    return said


def project_pod_status(status: Any) -> dict:
    """What `tool_condition` (and status.podPhase) read of a Pod's status, texts already bounded.

    The operator's cache keeps this instead of the whole status: timestamps, IPs, container ids,
    the conditions not read here and anything of a type `tool_condition` ignores are left out,
    so the condition computed from what is kept is the one computed from the whole Pod."""
    status = _map(status)
    out: dict = _fields(status, {"phase": str, "reason": str}, ("message",))
    conditions = [_fields(c, {"type": str, "status": str, "reason": str}, ("message",))
                  for c in _conditions(status).values()]
    if conditions:
        out["conditions"] = conditions
    for key in ("initContainerStatuses", "containerStatuses"):
        if isinstance(status.get(key), list):
            out[key] = [_container_status(cs) for cs in _list(status[key])]
    return out


def _container_status(cs: Mapping) -> dict:
    out = _fields(cs, {"ready": bool, "restartCount": int}, ("name", "image"), NAME_LIMIT)
    if isinstance(cs.get("state"), Mapping):
        out["state"] = {k: _state(v) for k, v in cs["state"].items() if k in ("waiting", "terminated", "running")}
    last = _map(cs.get("lastState")).get("terminated")
    if isinstance(last, Mapping):
        out["lastState"] = {"terminated": _state(last)}
    return out


def _state(value: Any) -> dict:
    return _fields(_map(value), {"reason": str, "exitCode": int, "signal": int}, ("message",))


# Values kept as they are: short enough, or compared with a constant (a reason longer than
# REASON_LIMIT is refused either way, so its first REASON_LIMIT + 1 characters decide the same).
_KEEP_LIMIT = max(REASON_LIMIT + 1, len("Succeeded"))


def _fields(obj: Mapping, exact: Mapping[str, type], texts: tuple[str, ...], limit: int = TEXT_LIMIT) -> dict:
    out = {}
    for key, kind in exact.items():
        value = obj.get(key)
        if isinstance(value, kind) and (kind is not int or not isinstance(value, bool)):
            out[key] = value[:_KEEP_LIMIT] if isinstance(value, str) else value
    out.update((k, clean(obj[k], limit)) for k in texts if isinstance(obj.get(k), str))
    return out
