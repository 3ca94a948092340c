"""What every renderer shares: the run's identity, child metadata, safe annotation values."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from toolshare.model import get, is_run_name, labels_for, name_of, namespace_of
from toolshare.principals import is_dns_label, is_valid_principal

# Last line of defence for annotation values: nothing a router could read as configuration.
_UNSAFE_ANNOTATION_RE = re.compile(r"[\s\"'`\\;{}<>|^]|[^\x21-\x7e]")


class RenderError(ValueError):
    """The run cannot be rendered safely (its identity or owner is invalid)."""


def identity(run: Mapping) -> tuple[str, str, str]:
    name, namespace, owner = name_of(run), namespace_of(run), get(run, "spec", "owner")
    if not is_run_name(name) or not is_dns_label(namespace) or not is_valid_principal(owner):
        raise RenderError(f"run {name!r} in {namespace!r}: invalid name, namespace or owner")
    return name, namespace, owner


def child_metadata(run: Mapping, name: str, endpoint: str | None = None) -> dict:
    return {"name": name, "namespace": namespace_of(run), "labels": labels_for(name_of(run), endpoint)}


def annotation(value: str) -> str:
    if _UNSAFE_ANNOTATION_RE.search(value):
        raise RenderError(f"refusing to render unsafe annotation value {value[:64]!r}")
    return value


def principal_list(principals: Iterable[str]) -> str:
    principals = sorted(principals)
    if not all(is_valid_principal(p) for p in principals):
        raise RenderError("refusing to render a principal outside the grammar")
    return annotation(",".join(principals))

