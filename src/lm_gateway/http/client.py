"""The pooled upstream HTTP client, tuned for a proxy.

One :class:`aiohttp.ClientSession` per backend for the life of the process (a reload that keeps a
backend's settings keeps its pool). The session is stripped of what a proxy does not need and what
costs time on every request: no cookie jar, no automatic decompression (bytes are relayed as they
come), no automatic ``User-Agent``/``Accept-Encoding`` headers, no per-request timeout objects
(timeouts are applied by the caller with one deadline per request), and redirects are never followed,
so credentials are never carried to another host.

Proxies: ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` are read once, when a backend's session is built,
not on every request (aiohttp's ``trust_env`` re-reads the environment and ``~/.netrc`` per request,
in a thread, which more than halved throughput).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import aiohttp


def proxy_for(url: str, env: Mapping[str, str] | None = None) -> str | None:
    """The proxy the environment asks for to reach ``url``, honouring ``NO_PROXY``."""
    env = os.environ if env is None else env
    parts = urlsplit(url)
    lowered = {k.lower(): v for k, v in env.items() if k.lower().endswith("_proxy") and v}
    no_proxy = lowered.get("no_proxy", "")
    if _bypassed(parts.hostname or "", no_proxy):
        return None
    return lowered.get(f"{parts.scheme}_proxy") or lowered.get("all_proxy")


def _bypassed(host: str, no_proxy: str) -> bool:
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


def new_session(max_connections: int, connect_timeout_s: float, base_url: str) -> aiohttp.ClientSession:
    """Build the tuned session (aiohttp is imported lazily: a demo-only gateway never pays for it)."""
    import aiohttp

    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=max_connections,
        keepalive_timeout=30.0,
        enable_cleanup_closed=False,
        ttl_dns_cache=60,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s),
        trust_env=False,
        proxy=proxy_for(base_url),
        raise_for_status=False,
    )


async def close_session(session: aiohttp.ClientSession) -> None:
    await session.close()
    # Give the connector a moment to close transports cleanly (aiohttp's documented advice).
    await asyncio.sleep(0)
