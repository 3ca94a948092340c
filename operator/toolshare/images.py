"""Image ownership and sharing (ImageShare), as pure functions over the ImageShares of the cluster.

An image is claimed per repository: the oldest ImageShare naming a repository makes its owner the
image owner, cluster-wide; later ImageShares of other owners for it are refused at admission and
never count. A share without a tag covers every tag (and digest) of the repository; with a tag,
that tag only. A run's owner may use a claimed image if they own it, or an ImageShare of the image
owner lists them or one of their groups. Unclaimed images are allowed unless a configured prefix
says they need an ImageShare.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from toolshare.policy import Policy


class ImageRef(NamedTuple):
    repository: str  # normalised: registry/path, e.g. docker.io/library/busybox
    tag: str | None
    digest: str | None


class Claim(NamedTuple):
    owner: str
    share: str  # "namespace/name" of the claiming ImageShare


def parse_image(image: str) -> ImageRef:
    """Normalise an image reference the way container runtimes resolve it (docker.io default)."""
    rest, _, digest = image.partition("@")
    head, slash, tail = rest.rpartition("/")
    name, colon, tag = tail.partition(":")
    path = f"{head}{slash}{name}"
    first, sep, remainder = path.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        repository = f"{first.lower()}/{remainder}"
    elif sep:
        repository = f"docker.io/{path}"
    else:
        repository = f"docker.io/library/{path}"
    return ImageRef(repository, tag if colon else None, digest or None)


def _spec(obj: Mapping) -> Mapping:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _ref(obj: Mapping) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _age_key(obj: Mapping) -> tuple:
    meta = obj.get("metadata") or {}
    return meta.get("creationTimestamp") or "~", meta.get("namespace") or "", meta.get("name") or ""


def claims(shares: Iterable[Mapping]) -> dict[str, Claim]:
    """{repository: Claim}: the oldest ImageShare with an owner claims its repository."""
    found: dict[str, Claim] = {}
    for share in sorted(shares, key=_age_key):
        spec = _spec(share)
        image, owner = spec.get("image"), spec.get("owner")
        if isinstance(image, str) and image and isinstance(owner, str) and owner:
            found.setdefault(parse_image(image).repository, Claim(owner, _ref(share)))
    return found


def _covering(image: ImageRef, claim: Claim, shares: Iterable[Mapping]) -> list[Mapping]:
    """The image owner's ImageShares that cover this tag of the repository."""
    out = []
    for share in shares:
        spec = _spec(share)
        if spec.get("owner") != claim.owner or not isinstance(spec.get("image"), str):
            continue
        ref = parse_image(spec["image"])
        if ref.repository == image.repository and (ref.tag is None or ref.tag == image.tag):
            out.append(share)
    return out


def granted(image: ImageRef, claim: Claim, shares: Iterable[Mapping]) -> tuple[set[str], set[str]]:
    """(users, groups) the image owner shares this image (tag) with."""
    users: set[str] = set()
    groups: set[str] = set()
    for share in _covering(image, claim, shares):
        users.update(u for u in _spec(share).get("users") or [] if isinstance(u, str))
        groups.update(g for g in _spec(share).get("groups") or [] if isinstance(g, str))
    return users, groups


def claim_problem(repository: str, owner: str, owner_groups: Iterable[str], namespace: str,
                  policy: Policy) -> str | None:
    """Why `owner` may not claim `repository` from an ImageShare in `namespace` (None: they may).
    Who may claim what is the administrator's rule (TOOLSHARE_IMAGE_CLAIMS), so nobody takes a
    public image everyone launches, or another team's registry path."""
    allowed = policy.claimable(owner, owner_groups, namespace)
    if any(repository.startswith(prefix) for prefix in allowed):
        return None
    where = ", ".join(repr(p) for p in allowed) if allowed else "none"
    return (f"{owner!r} may not claim {repository!r} from namespace {namespace!r}: claims are limited by the "
            f"administrator's rule TOOLSHARE_IMAGE_CLAIMS ({'; '.join(map(str, policy.image_claims)) or 'not set'}), "
            f"which lets them claim images under: {where}")


def unclaimed_denied(image: ImageRef, policy: Policy) -> str | None:
    """The configured prefix that makes this unclaimed image need an ImageShare (None: allowed)."""
    full = image.repository + (f":{image.tag}" if image.tag else "")
    return next((p for p in policy.unclaimed_image_deny if p == "*" or full.startswith(p)), None)


def use_problem(user: str, user_groups: Iterable[str], image: str, shares: Iterable[Mapping],
                policy: Policy) -> str | None:
    """Why `user` (with `user_groups`) may not launch `image` (None: they may)."""
    shares = list(shares)
    ref = parse_image(image)
    claim = claims(shares).get(ref.repository)
    if claim is None:
        prefix = unclaimed_denied(ref, policy)
        if prefix is None:
            return None
        return (f"image {image!r} is not shared by any ImageShare, and images under {prefix!r} may "
                "only be used once their owner shares them")
    if user == claim.owner:
        return None
    users, groups = granted(ref, claim, shares)
    if user in users or not groups.isdisjoint(user_groups):
        return None
    return (f"image {ref.repository!r} belongs to {claim.owner!r} (ImageShare {claim.share}) and is not "
            f"shared with user {user!r} or any of their groups; ask {claim.owner!r} to share it")


def share_problem(image: str, users: Iterable[str], groups: Iterable[str], shares: Iterable[Mapping],
                  policy: Policy, members: Mapping[str, Iterable[str]] | None = None) -> str | None:
    """The READ+EXECUTE rule: a run may be shared only with principals who may use its image.

    `members` maps users to their groups (the directory). Without a directory a user's groups are
    unknown here, so a user is not refused: the gate applies the rule on every request, with the
    groups the sign-in gives (access.may_use_image). Groups are always checked here.
    """
    shares = list(shares)
    ref = parse_image(image)
    claim = claims(shares).get(ref.repository)
    if claim is None:
        prefix = unclaimed_denied(ref, policy)
        return None if prefix is None else use_problem("", (), image, shares, policy)
    allowed_users, allowed_groups = granted(ref, claim, shares)
    for user in users if members is not None else ():
        if user != claim.owner and user not in allowed_users and allowed_groups.isdisjoint(members.get(user, ())):
            return (f"user {user!r} may not use the run's image {ref.repository!r} (owned by {claim.owner!r}); "
                    "the image must be shared with them first (ImageShare)")
    for group in groups:
        if group not in allowed_groups:
            return (f"group {group!r} may not use the run's image {ref.repository!r} (owned by {claim.owner!r}); "
                    "the image must be shared with the group first (ImageShare)")
    return None


def status(share: Mapping, all_shares: Iterable[Mapping]) -> tuple[bool, str, dict]:
    """(holds the claim, message, status.sharedWith) for one ImageShare."""
    spec = _spec(share)
    users = sorted(u for u in spec.get("users") or [] if isinstance(u, str))
    groups = sorted(g for g in spec.get("groups") or [] if isinstance(g, str))
    items = users + [f"group:{g}" for g in groups]
    summary = ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")
    shared = {"users": users, "groups": groups, "summary": summary}
    image = spec.get("image")
    if not isinstance(image, str) or not image:
        return False, "spec.image is missing", shared
    ref = parse_image(image)
    claim = claims(all_shares).get(ref.repository)
    if claim is None or claim.owner != spec.get("owner"):
        holder = f"{claim.owner!r} (ImageShare {claim.share})" if claim else "nobody"
        return False, f"image {ref.repository!r} is claimed by {holder}; this share does not count", shared
    return True, f"{ref.repository} owned by {claim.owner}", shared
