"""A do-nothing kube-scheduler extender on aiohttp, Harbinger's server stack: /filter passes
every node, /prioritize scores every node 0. The extender benchmark runs kube-scheduler
against it to separate what the HTTP extender mechanism costs from the extender's own work.

    python bench/echo_extender/echo.py PORT
"""

from __future__ import annotations

import json
import sys

from aiohttp import web


async def _filter(request: web.Request) -> web.Response:
    names = json.loads(await request.read()).get("NodeNames")
    return web.Response(body=json.dumps({"NodeNames": names, "FailedNodes": {}, "Error": ""}),
                        content_type="application/json")


async def _prioritize(request: web.Request) -> web.Response:
    names = json.loads(await request.read()).get("NodeNames") or []
    return web.Response(body=json.dumps([{"Host": name, "Score": 0} for name in names]),
                        content_type="application/json")


async def _ready(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application()
    app.router.add_post("/filter", _filter)
    app.router.add_post("/prioritize", _prioritize)
    app.router.add_get("/readyz", _ready)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
