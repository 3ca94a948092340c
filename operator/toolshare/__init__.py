"""Toolshare: share interactive tool runs on Kubernetes with named users and groups."""

GROUP = "toolshare.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
