"""The pooled upstream HTTP client, tuned for a proxy.

One :class:`aiohttp.ClientSession` per backend for the life of the process (a reload that keeps a
backend's settings keeps its pool). The session is stripped of what a proxy does not need and what
costs time on every request: no cookie jar, no automatic decompression (bytes are relayed as they
come), no automatic ``User-Agent``/``Accept-Encoding`` headers, no per-request timeout objects
(timeouts are applied by the caller with one deadline per request), and redirects are never followed,
so credentials are never carried to another host.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp


def new_session(max_connections: int, connect_timeout_s: float) -> aiohttp.ClientSession:
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
        trust_env=True,
        raise_for_status=False,
    )


async def close_session(session: aiohttp.ClientSession) -> None:
    await session.close()
    # Give the connector a moment to close transports cleanly (aiohttp's documented advice).
    await asyncio.sleep(0)
