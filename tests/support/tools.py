"""Real tools for the tests that look at what reaches a tool: a Pod on the node, behind the router.

`echo_run` is a ToolRun whose tool (Python's standard library, in the Python image built here)
answers who the router says is calling, and with `?echo=headers` every header it received (JSON).
`web_run` is the same tool on several HTTP endpoints with websockets too (Tornado, in the
JupyterLab image): `<path>/ws` echoes every message prefixed with the caller the router named,
and `<path>/download` sends 1 KiB every 50 ms for a minute.
`routed` waits until the tool is ready and its Ingress exists, and gives the host to ask the
router (tests/support/routing.py) for; `ws_exchange` talks to a websocket through the router.
"""

from __future__ import annotations

import asyncio

import aiohttp

from tests.support.objects import Toolshare, toolrun
from tests.support.wait import wait_for
from toolshare.local.images import catalog
from toolshare.local.tools import WEB

START = 180.0  # a tool's first start on a loaded 2-core machine

ECHO = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1]

class Tool(BaseHTTPRequestHandler):
    def answer(self):
        path, _, query = self.path.partition("?")
        if "echo=headers" in query.split("&"):
            body, kind = json.dumps([[k, v] for k, v in self.headers.items()]).encode(), "application/json"
        else:
            user = self.headers.get("X-Auth-Request-User") or "nobody"
            body, kind = f"hello from {NAME} to {user} at {path}\n".encode(), "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = answer

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", 8888), Tool).serve_forever()
"""


def web_run(name: str, ports: dict[str, int], ssh: bool = True, **kwargs) -> dict:
    """A run of the Tornado tool with one HTTP endpoint per (name, port), at the path /<name> of the
    run's host, and the SSH port if `ssh` (nothing listens there: it must never be routed)."""
    endpoints = [{"name": e, "port": p, "protocol": "http", "path": f"/{e}"} for e, p in ports.items()]
    run = toolrun(name, endpoints=endpoints + ([{"name": "ssh", "port": 22, "protocol": "ssh"}] if ssh else []),
                  **kwargs)
    run["spec"].update(image=catalog.JUPYTERLAB, command=["python3", "-c", WEB, name, *map(str, ports.values())])
    return run


def ws_exchange(url: str, host: str, token: str | None, messages: list[str],
                path: str = "/lab/ws") -> tuple[int, list[str]]:
    """Open a websocket to `path` on `host` through the router at `url`, send each message and read
    one answer per message: (101, answers), or (the refusal's status, []) if the upgrade is refused."""
    async def talk() -> tuple[int, list[str]]:
        headers = {"Host": host, **({"Authorization": f"Bearer {token}"} if token else {})}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            try:
                async with session.ws_connect(f"{url}{path}", headers=headers, autoping=True) as ws:
                    answers = []
                    for message in messages:
                        await ws.send_str(message)
                        answers.append((await ws.receive(timeout=10)).data)
                    return 101, answers
            except aiohttp.WSServerHandshakeError as refused:
                return refused.status, []

    return asyncio.run(talk())


def echo_run(name: str, tool_name: str | None = None, **kwargs) -> dict:
    run = toolrun(name, **kwargs)
    run["spec"].update(image=catalog.PYTHON, command=["python3", "-c", ECHO, tool_name or name])
    return run


def tool_ready(ts: Toolshare, name: str) -> dict | None:
    run = ts.get("toolruns", name) or {}
    cond = next((c for c in (run.get("status") or {}).get("conditions") or [] if c["type"] == "ToolReady"), {})
    return run if cond.get("status") == "True" else None


def routed(ts: Toolshare, run: str, endpoint: str = "lab", timeout: float = START) -> str:
    """The host of `run`'s `endpoint`, once its tool serves and its Ingress exists (the router picks
    the Ingress up by itself; until then it answers 404)."""
    wait_for(lambda: tool_ready(ts, run), timeout=timeout, what=f"{run}'s tool ready on the node")
    ingress = wait_for(lambda: ts.ingresses(run).get(endpoint), what=f"the {endpoint} Ingress of {run}")
    return ingress["spec"]["rules"][0]["host"]
