"""Soak test (issue #6): steady mixed load with upstream faults; RSS over time; every answer checked.

``python -m bench.soak --minutes 10`` (default 10; ``--minutes 1`` for a smoke run) starts the mock
upstream in ``--echo`` mode and lm-gateway (pinned as in ``python -m bench``: the gateway alone on
the first core, the mock and this process on the second), then sends a steady ``--rate`` (default
400 req/s) for the whole run, cycling through eight kinds of request: OpenAI or Anthropic client,
OpenAI or Anthropic upstream (the gateway's ``hint:fast`` and ``hint:claude`` tiers, so both
translation directions and both passthroughs), stream or not.

Every request carries a unique nonce in its user message (``n=<12 hex>``); the mock builds its
answer from it, and each answer is checked against its own request:

- a normal answer must be 200, in the client's format, with exactly the expected text (19 pieces
  ``<nonce>.<i>``, in order), and a stream must end properly (``data: [DONE]`` /
  ``event: message_stop``) with no error event;
- every ``--fault-every``-th request (default 25, i.e. 4 %) asks the mock for a fault, in turn:
  ``500`` (must come back as a 502 error in the client's format), ``cut`` (the upstream closes the
  connection mid-answer: a 502 error, or for a stream that already started, an error event after a
  prefix of the right text: never a silent truncation), ``slow`` (1 s late: must still be the
  right answer).

Outcomes: ``ok``, ``fault_ok`` (a fault reported as documented), ``lost`` (no answer, a timeout, a
connection closed without a response, a stream cut without an error event), ``mixed`` (any other
request's nonce, or text that is not this request's), ``wrong`` (anything else: an error where an
answer was due, the wrong status or shape). Targets: zero ``lost`` and ``mixed``.

Every ``--sample-s`` seconds (default 5) the gateway's RSS, open fds and sockets are sampled. After
the warm-up (default: 20 % of the run, at most 2 minutes) the RSS slope is fitted (least squares) and
given in MB per 10 minutes (target: < 1 MB). Fds and sockets are compared at the end (after the
clients have closed their connections) with the baseline taken after the warm-up: the gateway's
upstream pool legitimately keeps up to one connection per concurrent request.

Results: a table on stdout, ``bench/results/soak-latest.json``, the children's logs in
``bench/results/logs/soak-*.log``. Everything stops by itself after ``--minutes`` (plus a few seconds
of draining), on Ctrl-C or SIGTERM, and the children are always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httptools
import orjson
import uvloop

from bench import procs
from bench.loadgen import APIS, build_request, chat_body, fetch_once
from bench.mock_upstream import echo_pieces
from bench.procs import Proc, ProcessGroup
from bench.slow_streams import raise_fd_limit
from bench.targets import LaunchContext, gateway_launcher

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MOCK_CHUNKS = 20  # the mock's default: 19 text pieces per answer
FAULTS = ("500", "cut", "slow")
REQUEST_TIMEOUT_S = 15.0
SETTLE_S = 3.0  # after the load, before the final fd/socket count
CATCH_UP_S = 2.0
MIN_SLOPE_SPAN_S = 300.0  # a slope over less than this after the warm-up is not judged
_NONCE_RE = re.compile(rb"\b([0-9a-f]{12})\.\d+")


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of request of the mix."""

    api: str  # the client's format
    upstream: str  # the backend's format (which tier the model names)
    stream: bool

    @property
    def model(self) -> str:
        return "hint:claude" if self.upstream == "anthropic" else "hint:fast"

    @property
    def name(self) -> str:
        return f"{self.api[0]}2{self.upstream[0]}{'-stream' if self.stream else ''}"


KINDS = tuple(
    Kind(api, upstream, stream)
    for api in ("openai", "anthropic")
    for upstream in ("openai", "anthropic")
    for stream in (False, True)
)


def plan(n: int, fault_every: int) -> tuple[Kind, str | None]:
    """The kind and fault of request number ``n``: kinds in turn, every ``fault_every``-th a fault
    (``fault_every`` coprime with 8 spreads the faults over every kind)."""
    kind = KINDS[n % len(KINDS)]
    if fault_every > 0 and n % fault_every == fault_every - 1:
        return kind, FAULTS[(n // fault_every) % len(FAULTS)]
    return kind, None


# -- checking an answer ------------------------------------------------------------------------------


@dataclass(slots=True)
class Parsed:
    """What a response says, whatever its format."""

    text: str = ""
    ended: bool = False  # a stream's proper end marker, or a whole answer
    error: bool = False  # an error body, or an error event in a stream
    nonces: set[str] = field(default_factory=set)


def _events(body: bytes) -> list[tuple[str, bytes]]:
    """SSE events as (event name, data)."""
    out = []
    for block in body.split(b"\n\n"):
        name, data = "", []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if data:
            out.append((name, b"\n".join(data)))
    return out


def parse(kind: Kind, status: int, body: bytes) -> Parsed:
    """Read a response in the client's format (``ValueError`` if it is not well-formed)."""
    p = Parsed(nonces={m.decode() for m in _NONCE_RE.findall(body)})
    if status != 200 or not kind.stream:
        payload = orjson.loads(body)
        if status != 200:
            if kind.api == "openai":
                p.error = isinstance(payload.get("error"), dict) and "message" in payload["error"]
            else:
                p.error = payload.get("type") == "error" and isinstance(payload.get("error"), dict)
            return p
        if kind.api == "openai":
            p.text = payload["choices"][0]["message"]["content"]
        else:
            p.text = "".join(b["text"] for b in payload["content"] if b.get("type") == "text")
        p.ended = True
        return p
    pieces: list[str] = []
    for name, data in _events(body):
        if kind.api == "openai":
            if data == b"[DONE]":
                p.ended = True
                continue
            chunk = orjson.loads(data)
            if "error" in chunk:
                p.error = True
                continue
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    pieces.append(content)
        else:
            event = orjson.loads(data)
            kind_ = event.get("type") or name
            if kind_ == "error":
                p.error = True
            elif kind_ == "message_stop":
                p.ended = True
            elif kind_ == "content_block_delta" and event["delta"].get("type") == "text_delta":
                pieces.append(event["delta"]["text"])
    p.text = "".join(pieces)
    return p


def check(kind: Kind, fault: str | None, nonce: str, status: int, body: bytes) -> str:
    """The outcome of one request: ok, fault_ok, lost, mixed or wrong:<why>."""
    if status == 0:
        return "lost"
    try:
        p = parse(kind, status, body)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return f"wrong:malformed http {status}"
    if p.nonces - {nonce}:
        return "mixed"
    expected = "".join(echo_pieces(nonce, MOCK_CHUNKS))
    if fault in (None, "slow"):
        if status != 200:
            return f"wrong:http {status}"
        if p.error:
            return "wrong:error event"
        if not p.ended:
            return "lost"  # a stream cut with no error event: silent truncation
        return "ok" if p.text == expected else "mixed"
    if status == 502 and p.error:
        return "fault_ok"
    if fault == "cut" and kind.stream and status == 200:
        if not expected.startswith(p.text):
            return "mixed"
        if p.error and not p.ended:
            return "fault_ok"
        return "lost" if not p.error else "wrong:error event after the end"
    return f"wrong:fault {fault} gave http {status}{'' if p.error else ' without an error body'}"


# -- the load ------------------------------------------------------------------------------------


class _Client(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._future: asyncio.Future[tuple[int, bytes]] | None = None
        self._parts: list[bytes] = []
        self.reusable = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    async def request(self, raw: bytes, timeout_s: float) -> tuple[int, bytes]:
        """(status, body); status 0 when the connection closed without a complete response."""
        assert self._transport is not None
        self._future = asyncio.get_running_loop().create_future()
        self._parts = []
        self.reusable = False
        self._transport.write(raw)
        try:
            return await asyncio.wait_for(self._future, timeout_s)
        except TimeoutError:
            self.close()
            return 0, b"timeout"

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._resolve(0, b"unparsable response")
            self.close()

    def on_body(self, body: bytes) -> None:
        self._parts.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self._parser.should_keep_alive()
        self._resolve(self._parser.get_status_code(), b"".join(self._parts))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.reusable = False
        self._resolve(0, b"closed")

    def _resolve(self, status: int, body: bytes) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result((status, body))

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def _factory(client: _Client) -> Callable[[], _Client]:
    return lambda: client


@dataclass
class Load:
    """The load's shared state: what to send where, and the tally."""

    port: int
    rate: float
    connections: int
    fault_every: int
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # first response of each bad outcome
    stop_at: float = 0.0

    def request(self, n: int) -> tuple[Kind, str | None, str, bytes]:
        kind, fault = plan(n, self.fault_every)
        nonce = f"{self.tag}{n:08x}"
        text = f"soak n={nonce}" + (f" f={fault}" if fault else "")
        api = APIS[kind.api]
        body = api.body(kind.model, stream=kind.stream, content=text)
        return kind, fault, nonce, build_request("127.0.0.1", self.port, api.path, body)

    def tally(self, kind: Kind, fault: str | None, outcome: str, body: bytes) -> None:
        self.outcomes[outcome] += 1
        label = kind.name + (f"+{fault}" if fault else "")
        self.by_kind.setdefault(label, Counter())[outcome] += 1
        if outcome not in ("ok", "fault_ok") and outcome not in self.examples:
            self.examples[outcome] = f"{label}: {body[:300].decode(errors='replace')}"

    async def worker(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        interval = self.connections / self.rate
        next_at = time.monotonic() + index * interval / self.connections
        client: _Client | None = None
        try:
            while True:
                now = time.monotonic()
                if now >= self.stop_at:
                    return
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                # A late answer (a slow fault) is caught up, by at most CATCH_UP_S of requests.
                next_at = max(next_at + interval, time.monotonic() - CATCH_UP_S)
                if client is None or not client.reusable:
                    if client is not None:
                        client.close()
                    client = _Client()
                    try:
                        await asyncio.wait_for(
                            loop.create_connection(_factory(client), "127.0.0.1", self.port), 5.0
                        )
                    except (OSError, TimeoutError):
                        self.outcomes["connect error"] += 1
                        client = None
                        continue
                    client.reusable = True
                n = self.sent
                self.sent += 1
                kind, fault, nonce, raw = self.request(n)
                status, body = await client.request(raw, REQUEST_TIMEOUT_S)
                self.tally(kind, fault, check(kind, fault, nonce, status, body), body)
        finally:
            if client is not None:
                client.close()


# -- measuring the gateway -----------------------------------------------------------------------------


def fd_counts(pids: list[int]) -> tuple[int, int]:
    """(open fds, of which sockets) of the processes."""
    fds = sockets = 0
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            fds += 1
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    sockets += 1
    return fds, sockets


def _snapshot(pids: list[int]) -> dict[str, Any]:
    fds, sockets = fd_counts(pids)
    return {"rss_mb": round(procs.rss_mb(pids), 2), "fds": fds, "sockets": sockets}


def slope_per_10min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per 10 minutes."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 600.0


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_mb: float
    fds: int
    sockets: int
    done: int  # answers checked so far
    cpu: float  # the gateway's CPU share since the previous sample


async def sample(gateway: Proc, load: Load, every_s: float, t0: float, out: list[Sample]) -> None:
    """Every ``every_s`` until the load stops: RSS, fds, sockets, progress line on stderr."""
    last_cpu, last_t = procs.cpu_seconds(procs.tree_pids(gateway.pid)), time.monotonic()
    while time.monotonic() < load.stop_at:
        await asyncio.sleep(min(every_s, max(0.0, load.stop_at - time.monotonic())))
        pids = procs.tree_pids(gateway.pid)
        cpu, now = procs.cpu_seconds(pids), time.monotonic()
        fds, sockets = fd_counts(pids)
        s = Sample(
            round(now - t0, 1),
            procs.rss_mb(pids),
            fds,
            sockets,
            sum(load.outcomes.values()),
            (cpu - last_cpu) / max(now - last_t, 1e-9),
        )
        last_cpu, last_t = cpu, now
        out.append(s)
        bad = sum(v for k, v in load.outcomes.items() if k not in ("ok", "fault_ok"))
        _say(
            f"{s.t:7.1f} s  RSS {s.rss_mb:6.2f} MB  fds {s.fds:4d}  sockets {s.sockets:4d}  "
            f"answers {s.done:8d}  gateway CPU {s.cpu:4.0%}  not ok {bad}"
        )


# -- the run -------------------------------------------------------------------------------------------


@dataclass
class Options:
    minutes: float
    rate: float
    connections: int
    fault_every: int
    sample_s: float
    warmup_s: float
    pin: bool
    json_path: Path


async def _until_served(proc: Proc, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise SystemExit(f"{proc.name} exited: {proc.log_tail(3)}")
        with contextlib.suppress(OSError, TimeoutError):
            status, _ = await fetch_once(port, body=chat_body("hint:fast"), timeout_s=2.0)
            if status == 200:
                return
        await asyncio.sleep(0.01)
    raise SystemExit(f"{proc.name} did not answer within {timeout_s:.0f} s (log: {proc.log_path})")


async def soak(opts: Options, group: ProcessGroup) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    target_cores, load_cores = ([cpus[0]], [cpus[1]]) if opts.pin and len(cpus) >= 2 else (None, None)
    if load_cores:
        procs.pin_self(load_cores)
    mock_port, port, admin_port = procs.free_ports(3)
    mock = group.spawn(
        "soak-mock",
        [sys.executable, "-m", "bench.mock_upstream", "--port", str(mock_port), "--echo"],
        load_cores,
        {"PYTHONPATH": str(procs.REPO_ROOT)},
    )
    await _until_served(mock, mock_port, 10.0)
    launch = gateway_launcher()(
        LaunchContext("soak-gateway", f"http://127.0.0.1:{mock_port}", port, admin_port, group.log_dir)
    )
    gateway = group.spawn("soak-gateway", launch.argv, target_cores, launch.env)
    await _until_served(gateway, port, 15.0)
    idle_pids = procs.tree_pids(gateway.pid)
    idle = _snapshot(idle_pids)
    _say(
        f"soak: {opts.minutes:g} min at {opts.rate:g} req/s on {opts.connections} connections, "
        f"a fault every {opts.fault_every} requests; warm-up {opts.warmup_s:.0f} s; "
        f"gateway idle: {idle['rss_mb']} MB, {idle['fds']} fds"
    )
    load = Load(port, opts.rate, opts.connections, opts.fault_every)
    t0 = time.monotonic()
    load.stop_at = t0 + opts.minutes * 60.0
    samples: list[Sample] = []
    sampler = asyncio.create_task(sample(gateway, load, opts.sample_s, t0, samples))
    workers = [asyncio.create_task(load.worker(i)) for i in range(opts.connections)]
    await asyncio.gather(*workers)  # each returns by itself at stop_at (+ its last request)
    load_s = time.monotonic() - t0
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    await asyncio.sleep(SETTLE_S)
    end_pids = procs.tree_pids(gateway.pid)
    after = _snapshot(end_pids)
    warm = [s for s in samples if s.t >= opts.warmup_s]
    at_warmup = warm[0] if warm else None
    _, stats = await fetch_once(mock_port, path="/mock/stats", method="GET", timeout_s=2.0)
    answered = sum(load.outcomes.values())
    return {
        "meta": {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "minutes": opts.minutes,
            "rate": opts.rate,
            "connections": opts.connections,
            "fault_every": opts.fault_every,
            "warmup_s": opts.warmup_s,
            "pinned": target_cores is not None,
            "loadavg_at_end": _loadavg(),
        },
        "achieved_rps": round(answered / load_s, 1),
        "answers": answered,
        "outcomes": dict(load.outcomes),
        "lost": load.outcomes["lost"],
        "mixed": load.outcomes["mixed"],
        "wrong": sum(v for k, v in load.outcomes.items() if k.startswith("wrong")),
        "by_kind": {k: dict(v) for k, v in sorted(load.by_kind.items())},
        "examples": load.examples,
        "mock": json.loads(stats) if stats else None,
        "rss_slope_mb_per_10min": _round(slope_per_10min([(s.t, s.rss_mb) for s in warm]), 3),
        "rss_mb": {
            "idle": idle["rss_mb"],
            "at_warmup": round(at_warmup.rss_mb, 2) if at_warmup else None,
            "end_of_load": round(samples[-1].rss_mb, 2) if samples else None,
            "max": round(max(s.rss_mb for s in samples), 2) if samples else None,
            "after_settle": after["rss_mb"],
        },
        "fds": {
            "idle": idle["fds"],
            "at_warmup": at_warmup.fds if at_warmup else None,
            "end_of_load": samples[-1].fds if samples else None,
            "after_settle": after["fds"],
        },
        "sockets": {
            "idle": idle["sockets"],
            "at_warmup": at_warmup.sockets if at_warmup else None,
            "end_of_load": samples[-1].sockets if samples else None,
            "after_settle": after["sockets"],
        },
        "samples": [
            {
                "t": s.t,
                "rss_mb": round(s.rss_mb, 3),
                "fds": s.fds,
                "sockets": s.sockets,
                "cpu": round(s.cpu, 3),
            }
            for s in samples
        ],
    }


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


def _loadavg() -> str | None:
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        return f.read().strip()
    return None


def report(res: dict[str, Any], every_s: float = 60.0) -> str:
    """RSS table (one row per ``every_s``), then the verdicts."""
    lines = [f"{'t (s)':>7} {'RSS MB':>8} {'fds':>5} {'sockets':>7} {'gateway CPU':>11}"]
    next_t = 0.0
    for s in res["samples"]:
        if s["t"] >= next_t or s is res["samples"][-1]:
            lines.append(f"{s['t']:7.0f} {s['rss_mb']:8.2f} {s['fds']:5d} {s['sockets']:7d} {s['cpu']:11.0%}")
            next_t = s["t"] - s["t"] % every_s + every_s
    slope = res["rss_slope_mb_per_10min"]
    span = res["samples"][-1]["t"] - res["meta"]["warmup_s"] if res["samples"] else 0.0
    verdict = "-" if slope is None else "ok" if slope < 1.0 else "MISSED"
    if slope is not None and span < MIN_SLOPE_SPAN_S:
        verdict = f"- (only {span:.0f} s after warm-up: too short to judge)"
    rss, fds, socks = res["rss_mb"], res["fds"], res["sockets"]
    lines += [
        "",
        f"answers {res['answers']:,} at {res['achieved_rps']:,.0f} req/s: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(res["outcomes"].items())),
        f"lost {res['lost']}, mixed up {res['mixed']}, wrong {res['wrong']}  "
        f"(target: 0 lost, 0 mixed)  {'ok' if res['lost'] == 0 and res['mixed'] == 0 else 'MISSED'}",
        f"RSS slope after warm-up ({res['meta']['warmup_s']:.0f} s): "
        + ("-" if slope is None else f"{slope:+.3f} MB per 10 min")
        + f"  (target: < 1 MB)  {verdict}",
        f"RSS MB: idle {rss['idle']}, at warm-up {rss['at_warmup']}, max {rss['max']}, "
        f"end of load {rss['end_of_load']}, after settling {rss['after_settle']}",
        f"fds: idle {fds['idle']}, at warm-up {fds['at_warmup']}, end of load {fds['end_of_load']}, "
        f"after settling {fds['after_settle']}; sockets: idle {socks['idle']}, at warm-up "
        f"{socks['at_warmup']}, end {socks['end_of_load']}, after settling {socks['after_settle']}",
    ]
    if res.get("mock"):
        lines.append(f"mock: {res['mock']}")
    for outcome, example in res["examples"].items():
        lines.append(f"first {outcome}: {example}")
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> Options:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    ap.add_argument("--rate", type=float, default=400.0, help="requests per second (default 400)")
    ap.add_argument("--connections", type=int, default=48, help="client connections (default 48)")
    ap.add_argument("--fault-every", type=int, default=25, help="every Nth request a fault; 0: none")
    ap.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period, s (default 5)")
    ap.add_argument(
        "--warmup-s", type=float, help="excluded from the slope (default 20 %% of the run, ≤ 120)"
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin the gateway and the load to cores")
    ap.add_argument("--json", type=Path, default=RESULTS_DIR / "soak-latest.json")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.connections < 1 or args.sample_s <= 0:
        ap.error("--minutes, --rate, --sample-s must be > 0 and --connections >= 1")
    warmup = args.warmup_s if args.warmup_s is not None else min(120.0, 0.2 * args.minutes * 60.0)
    return Options(
        args.minutes,
        args.rate,
        args.connections,
        args.fault_every,
        args.sample_s,
        warmup,
        not args.no_pin,
        args.json,
    )


async def _main(opts: Options, group: ProcessGroup) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await soak(opts, group)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    raise_fd_limit()
    group = ProcessGroup(RESULTS_DIR / "logs")
    try:
        res = uvloop.run(_main(opts, group))
    except (KeyboardInterrupt, asyncio.CancelledError):
        _say("interrupted: children stopped, no results written")
        return 130
    finally:
        group.stop_all()
    opts.json_path.parent.mkdir(parents=True, exist_ok=True)
    opts.json_path.write_text(json.dumps(res, indent=2) + "\n")
    print(report(res))
    print(f"\nresults: {opts.json_path}")
    return 0 if res["lost"] == 0 and res["mixed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
