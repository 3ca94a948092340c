"""A reflector Store (client/watch.Store) that records what it was given, for the paging tests."""

from __future__ import annotations


class Recording:
    """Each LIST's store: the names of each page it was given, and how often it was finished.
    Every store made is kept in `made` (clear it first)."""

    made: list["Recording"] = []

    def __init__(self) -> None:
        self.pages: list[list[str]] = []
        self.finished = 0
        Recording.made.append(self)

    def page(self, items: list[dict]) -> None:
        self.pages.append([i["metadata"]["name"] for i in items])

    def finish(self) -> None:
        self.finished += 1
