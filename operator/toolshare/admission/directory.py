"""The optional directory of known users and groups (a ConfigMap), parsed and checked purely.

The ConfigMap's ``directory.yaml`` key holds::

    users: [alice, bob, carol]
    groups:
      lab: [alice, bob]        # group: its members (members must be listed users)
      guests: [carol]

When a directory is configured, naming a principal it does not list is refused at admission
("user 'bobb' is not registered"); group members also give the groups of an owner named by an
administrator (for the image rule), where the request's own groups do not apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import yaml

from toolshare.principals import is_valid_principal

KEY = "directory.yaml"


class Directory(NamedTuple):
    users: frozenset[str]
    groups: Mapping[str, frozenset[str]]  # group -> members

    def groups_of(self, user: str) -> tuple[str, ...]:
        return tuple(sorted(g for g, members in self.groups.items() if user in members))

    @property
    def members(self) -> dict[str, tuple[str, ...]]:
        return {user: self.groups_of(user) for user in self.users}


class DirectoryError(ValueError):
    pass


def parse(data: Mapping[str, str] | None) -> Directory:
    """A ConfigMap's data to a Directory; malformed content raises with the reason."""
    try:
        doc = yaml.safe_load((data or {}).get(KEY) or "") or {}
    except yaml.YAMLError as e:
        raise DirectoryError(f"{KEY} is not YAML: {e}") from None
    if not isinstance(doc, Mapping):
        raise DirectoryError(f"{KEY} must be a mapping with users and groups")
    users = doc.get("users") or []
    groups = doc.get("groups") or {}
    if not isinstance(users, list) or not isinstance(groups, Mapping):
        raise DirectoryError(f"{KEY}: users must be a list and groups a mapping of group to members")
    bad = [p for p in [*users, *groups] if not is_valid_principal(p)]
    bad += [m for members in groups.values() for m in (members or []) if not is_valid_principal(m)]
    if bad:
        raise DirectoryError(f"{KEY}: {str(bad[0])[:64]!r} is not a valid principal")
    return Directory(frozenset(users), {g: frozenset(members or []) for g, members in groups.items()})


def unregistered(directory: Directory | None, users: Iterable[str] = (), groups: Iterable[str] = ()) -> str | None:
    """The first principal the directory does not know, as a refusal message (None: all known)."""
    if directory is None:
        return None
    for user in users:
        if user not in directory.users:
            return f"user {user!r} is not registered"
    for group in groups:
        if group not in directory.groups:
            return f"group {group!r} is not registered"
    return None
