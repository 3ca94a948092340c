"""A list-then-watch reflector on aiohttp: the gate's only reads from the Kubernetes API, and the
operator's watches of its children (controller/children.py).

Credentials come from the kubeconfig (or the in-cluster service account) through the official
client's config loader; requests are plain aiohttp so one event loop serves checks and watches.
A watch resumes from the last resourceVersion (bookmarks keep it fresh); 410 Gone means the
server no longer has that history, so the reflector lists again and replaces its store. A LIST is
paged (PAGE objects per request; every page is served at the first one's resourceVersion), each page
handed to the store as it comes: at 10,000 runs a whole LIST of ToolRuns parsed at once was tens of
megabytes alive together, and one long stretch of the event loop.

Nothing a watch delivers can stop it for good: any failure (a malformed, oversized or unexpected
event, an error while storing it, a broken connection) clears `synced`, so the gate answers 503
instead of deciding from a store that may have missed an event, and the reflector lists afresh
and goes on. Events are read up to MAX_EVENT_BYTES (an object is at most 1.5 MiB in etcd), a LIST
has no such limit.

The operator starts its reflectors from the resourceVersion of its own start-up LIST (state/views
fill), so nothing is listed twice, and lists again (paged, into its cache) through `lister`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol
from urllib.parse import urlencode

import aiohttp
import orjson

from toolshare.client.config import ApiConfig

log = logging.getLogger("toolshare.watch")
WATCH_TIMEOUT = 300  # seconds the server keeps one watch open before we start the next
MAX_EVENT_BYTES = 8 << 20
PAGE = 500  # objects per page of a LIST


class Store(Protocol):
    """Where a LIST goes, page by page: `page` for each, `finish` once the last is in (then the
    store holds exactly what was listed). A LIST that fails half-way is never finished."""

    def page(self, items: list[dict]) -> None: ...

    def finish(self) -> None: ...


class Gone(Exception):
    """The resourceVersion we watch from is too old (HTTP 410): list again."""


class Reflector:
    """Keeps a store (one per LIST) and `on_event` fed with every object at `path` matching `label_selector`."""

    def __init__(self, api: ApiConfig, path: str, label_selector: str = "", *,
                 store: Callable[[], Store] | None = None,
                 on_event: Callable[[str, dict], None | Awaitable[None]],
                 on_failure: Callable[[], None] = lambda: None, max_event_bytes: int = MAX_EVENT_BYTES,
                 resource_version: str = "", lister: Callable[[], Awaitable[str]] | None = None,
                 watch_timeout: int = WATCH_TIMEOUT, page: int = PAGE):
        """Each LIST goes to a new `store()`, page by page (one of `store` and `lister` is needed
        unless the reflector starts from `resource_version`).
        `resource_version`: already listed at this version, so watch from it (no first LIST);
        `lister`: lists in its own way (and stores what it listed) and returns the version, in
        place of the reflector's own LIST into `store()`. `on_event` may be a coroutine function: each
        event is handled before the next is read."""
        self.api, self.path, self.selector = api, path, label_selector
        self.max_event_bytes = max_event_bytes
        self.on_event, self.on_failure = on_event, on_failure
        self.store = store
        self.lister = lister
        self.page = page
        # The server ends each watch after watch_timeout s and we resume from the last version; a
        # peer that went silent without closing (half-open) is noticed 10 s after that.
        self.watch_timeout = watch_timeout
        self.synced = asyncio.Event()
        self.resource_version = resource_version
        if resource_version:
            self.synced.set()
        self.lists = 0  # how often the reflector listed (once, plus once per 410 or failure)
        self.failures = 0

    def _url(self, **params) -> str:
        query = {**({"labelSelector": self.selector} if self.selector else {}), **params}
        return f"{self.api.host}{self.path}?{urlencode(query)}"

    async def run(self, session: aiohttp.ClientSession) -> None:
        delay = 0.5
        while True:
            try:
                if not self.resource_version:
                    await self._list(session)
                await self._watch(session)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Gone:
                log.info("watch of %s expired (410); listing again", self.path)
                self.synced.clear()
                self.resource_version = ""
            except Exception as e:  # noqa: BLE001 - whatever it was, the store may have missed an event
                self.failures += 1
                self.on_failure()
                self.synced.clear()
                self.resource_version = ""
                log.warning("watch of %s failed (%s: %s); not answering from it until it is listed again "
                            "in %.1fs", self.path, type(e).__name__, str(e)[:200], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _list(self, session: aiohttp.ClientSession) -> None:
        if self.lister is not None:
            self.resource_version = await self.lister()
            self.lists += 1
            self.synced.set()
            return
        store, token, version = self.store(), "", ""
        while True:
            params = {"limit": str(self.page), **({"continue": token} if token else {})}
            async with session.get(self._url(**params), headers=self.api.headers(), ssl=self.api.ssl,
                                   timeout=aiohttp.ClientTimeout(total=60)) as resp:
                if resp.status == 410:  # the continue token expired: list from the start
                    raise Gone()
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                      message=(await resp.text())[:300])
                body = orjson.loads(await resp.read())
            meta = body.get("metadata") or {}
            version = version or meta["resourceVersion"]
            store.page(body.get("items") or [])
            del body
            token = meta.get("continue") or ""
            if not token:
                break
        store.finish()
        self.resource_version = version
        self.lists += 1
        self.synced.set()

    async def _watch(self, session: aiohttp.ClientSession) -> None:
        url = self._url(watch="1", resourceVersion=self.resource_version, allowWatchBookmarks="true",
                        timeoutSeconds=str(self.watch_timeout))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.watch_timeout + 10)
        async with session.get(url, headers=self.api.headers(), ssl=self.api.ssl, timeout=timeout) as resp:
            if resp.status == 410:
                raise Gone()
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                  message=(await resp.text())[:300])
            while line := await resp.content.readline(max_line_length=self.max_event_bytes):
                if line.strip():
                    handled = self._handle(orjson.loads(line))
                    if handled is not None:
                        await handled

    def _handle(self, event: Mapping) -> Awaitable[None] | None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ValueError(f"watch error: {obj.get('message')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = rv
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            handled = self.on_event(kind, obj)
            return handled if inspect.isawaitable(handled) else None
        return None


class Reflectors:
    """Reflectors on one aiohttp session, each run as a task, stopped together."""

    def __init__(self, api: ApiConfig, watch_timeout: int = WATCH_TIMEOUT):
        self.api, self.watch_timeout = api, watch_timeout
        self.session: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task] = []
        self.reflectors: dict[str, Reflector] = {}

    def run(self, name: str, path: str, label_selector: str = "", **kwargs) -> Reflector:
        """Start a Reflector(api, path, label_selector, **kwargs) named `name`."""
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.api.ssl, limit=0))
        reflector = self.reflectors[name] = Reflector(self.api, path, label_selector,
                                                      watch_timeout=self.watch_timeout, **kwargs)
        self.tasks.append(asyncio.create_task(reflector.run(self.session), name=f"watch-{name}"))
        return reflector

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
