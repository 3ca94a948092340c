"""A stand-in for a tool's pod (no kubelet runs locally): answers who the proxy says is calling,
and with `?echo=headers` every header it received (JSON), to show what a tool gets to see."""

from __future__ import annotations

import argparse

from aiohttp import web


def make_app(name: str) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        if request.query.get("echo") == "headers":
            return web.json_response([[k, v] for k, v in request.headers.items()])
        user = request.headers.get("X-Auth-Request-User", "")
        return web.Response(text=f"hello from {name} to {user or 'nobody'} at {request.path}\n")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", hello)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="tool")
    args = parser.parse_args()
    web.run_app(make_app(args.name), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
