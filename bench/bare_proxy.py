"""The reference point: the barest useful Python proxy for chat completions.

aiohttp's web server, one pooled keep-alive aiohttp ``ClientSession``, orjson, uvloop. Per request
it does the minimum a gateway must do and nothing else: read the body, parse the JSON once, set
``model``, POST it to the upstream, and return the body, or relay an SSE stream chunk by chunk as the
chunks arrive. No routing, auth, logging, validation, retries or metrics: whatever lm-gateway costs
above this is the price of its features (see ``reference/python-stacks.md``, first row, which this
reproduces: aiohttp web + aiohttp client, untuned).

Run: ``python -m bench.bare_proxy --port 18100 --upstream http://127.0.0.1:18090``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import aiohttp
import orjson
import uvloop
from aiohttp import web

_JSON = {"Content-Type": "application/json"}
_SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
SESSION = web.AppKey("session", aiohttp.ClientSession)


def make_app(upstream: str, model: str) -> web.Application:
    """The whole proxy: one handler, one shared client session."""
    url = upstream.rstrip("/") + "/v1/chat/completions"

    async def chat(request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json_response({"error": {"message": "invalid JSON"}}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": {"message": "expected an object"}}, status=400)
        body["model"] = model
        session = request.app[SESSION]
        try:
            async with session.post(url, data=orjson.dumps(body), headers=_JSON) as up:
                if body.get("stream") is not True or up.status != 200:
                    data = await up.read()
                    return web.Response(
                        body=data, status=up.status, headers={"Content-Type": up.content_type}
                    )
                resp = web.StreamResponse(status=200, headers=_SSE)
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except aiohttp.ClientError as exc:
            return web.json_response({"error": {"message": f"upstream: {exc}"}}, status=502)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def client_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=60)
        app[SESSION] = aiohttp.ClientSession(connector=connector)
        yield
        await app[SESSION].close()

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.cleanup_ctx.append(client_ctx)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int, upstream: str, model: str) -> None:
    """Serve until SIGINT/SIGTERM."""
    runner = web.AppRunner(make_app(upstream, model), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port}", flush=True)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18100)
    ap.add_argument("--upstream", default="http://127.0.0.1:18090", help="base URL of the upstream")
    ap.add_argument("--model", default="mock-model", help="the model name written into every request")
    args = ap.parse_args(argv)
    coro = serve(args.host, args.port, args.upstream, args.model)
    uvloop.run(coro)


if __name__ == "__main__":
    main()
