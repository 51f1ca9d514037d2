"""Micro-benchmark of the upstream client alone: the gateway's own pool vs a tuned aiohttp session.

Prints requests/s and the client process's CPU time per request (which a busy neighbour disturbs much
less). Run from the repository root: ``python -m bench.transport_client [--seconds 3]``. The mock
upstream runs in its own process, pinned to the last CPU when possible; this process to the first.
The aiohttp session is tuned the way the gateway used it before it had its own transport (no cookie
jar, no decompression, no automatic headers, environment read once).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import uvloop

from lm_gateway.http.transport import Pool

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
STREAM_BODY = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
PATH = "/v1/chat/completions"


def new_session(url: str) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30.0)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        trust_env=False,
    )


@contextmanager
def mock_url() -> Iterator[str]:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.mock_upstream", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpus[-1]})) if len(cpus) > 1 else None,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})
    try:
        yield f"http://127.0.0.1:{line.split()[1]}"
    finally:
        if cpus:
            os.sched_setaffinity(0, set(cpus))
        proc.terminate()
        proc.wait(5)


async def _rate(work: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> tuple[float, float]:
    """(requests/s, client CPU microseconds per request)."""
    stop = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await work()
            done += 1

    start = time.perf_counter()
    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - cpu
    return done / (time.perf_counter() - start), cpu / max(done, 1) * 1e6


async def _compare(url: str, seconds: float, rounds: int) -> list[str]:
    pool = Pool(url)
    prepared = pool.prepare_headers(HEADERS)
    session = new_session(url)

    async def pool_whole() -> None:
        await (await pool.request("POST", PATH, prepared, BODY)).read()

    async def pool_stream() -> None:
        resp = await pool.request("POST", PATH, prepared, STREAM_BODY)
        while await resp.readany():
            pass

    async def aiohttp_whole() -> None:
        async with session.post(url + PATH, data=BODY, headers=HEADERS, allow_redirects=False) as resp:
            await resp.read()

    async def aiohttp_stream() -> None:
        async with session.post(url + PATH, data=STREAM_BODY, headers=HEADERS, allow_redirects=False) as resp:
            while await resp.content.readany():
                pass

    cases = [
        ("whole", 1, pool_whole, aiohttp_whole),
        ("whole", 16, pool_whole, aiohttp_whole),
        ("whole", 64, pool_whole, aiohttp_whole),
        ("stream", 16, pool_stream, aiohttp_stream),
    ]
    runs: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
    try:
        for _ in range(rounds):  # interleaved, so that a noisy neighbour hurts both sides alike
            for kind, concurrency, ours, theirs in cases:
                for name, work in (("pool", ours), ("aiohttp", theirs)):
                    runs.setdefault((kind, concurrency, name), []).append(
                        await _rate(work, concurrency, seconds)
                    )
    finally:
        await pool.close()
        await session.close()
    lines = []
    for kind, concurrency, _, _ in cases:
        pool_runs = runs[(kind, concurrency, "pool")]
        aiohttp_runs = runs[(kind, concurrency, "aiohttp")]
        ours_rate, theirs_rate = (statistics.median(r for r, _ in x) for x in (pool_runs, aiohttp_runs))
        ours_cpu, theirs_cpu = (statistics.median(c for _, c in x) for x in (pool_runs, aiohttp_runs))
        lines.append(
            f"{kind:6s} c={concurrency:<3d} pool {ours_rate:7.0f} req/s {ours_cpu:5.0f} us CPU/req | "
            f"aiohttp (tuned) {theirs_rate:7.0f} req/s {theirs_cpu:5.0f} us CPU/req | "
            f"{ours_rate / theirs_rate:4.1f}x req/s, {theirs_cpu / ours_cpu:4.1f}x less CPU"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="measured window per case and round")
    args = parser.parse_args()
    with mock_url() as url:
        print("\n".join(uvloop.run(_compare(url, args.seconds, rounds=3))))


if __name__ == "__main__":
    main()
