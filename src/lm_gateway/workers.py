"""``lm-gateway --workers N``: N worker processes serve the client port, one supervisor the admin port.

One Python process uses one core. With ``--workers N`` (N > 1; the default 1 is the plain
single-process :class:`~lm_gateway.server.Gateway`, untouched and at no added cost):

* **The client port**: each worker listens on its own socket bound with ``SO_REUSEPORT`` to the same
  address, and the kernel (Linux) spreads new connections across them by a hash of the client's
  address and port. Why not one socket shared by all: every worker then wakes for each new
  connection and the first one accepts all that are waiting, so a burst of keep-alive connections
  (a load balancer's pool, a benchmark) lands on one worker and the others stay idle (seen here:
  16 connections, 16 to one worker). The supervisor first binds the address itself, without
  listening, which resolves port 0 to one port for all and holds it while workers come and go; a
  worker binds when it is ready to serve, so a starting worker gets no connections, and one that
  dies takes only the connections waiting in its own queue with it (they are reset). Keep-alive
  connections stay on the worker that accepted them, so a few of them can still be unevenly spread;
  many clients even out.
* **The admin port** is served by the supervisor alone (a :class:`Gateway` whose client listener
  is its workers: it overrides ``start_client``, ``reload``, ``stop`` and ``backend_runtime``), so
  the dashboard, ``/admin/traffic``, ``/admin/stats``, ``/metrics`` and the live feed show the
  traffic of *all* workers: each worker forwards every traffic entry to the supervisor, which
  records it in the one :class:`~lm_gateway.traffic.TrafficLog` those views read (tagged
  ``"worker": <pid>``). Counts add up exactly; nothing is sampled.
* **The channel** between the supervisor and each worker is a Unix socketpair carrying one orjson
  message per line. Worker → supervisor: ``ready``; ``entries`` (a batch of traffic entries as
  arrays, sent at most every :data:`FLUSH_S` or every :data:`MAX_BATCH` entries); ``hb``, a
  heartbeat every :data:`HEARTBEAT_S` with the worker's in-flight gauges, its circuit breakers and
  concurrency gates and how many entries it dropped; ``reloaded``. Supervisor → worker: ``stats``
  (the aggregate public counters, the answer to each heartbeat, which the worker's ``/status``
  shows) and ``reload``.
* **A worker's hot path never waits for the supervisor**: recording an entry appends a tuple to a
  list; the batch is written by a timer, without blocking (asyncio buffers it). If the supervisor
  falls behind and more than :data:`MAX_PENDING_BYTES` are waiting, the batch is dropped and counted
  (``/admin/workers`` shows the drops, and the supervisor logs them).
* **Gauges** (in-flight requests and streams, each backend's gate and circuit) come from the latest
  heartbeats, so they lag by up to :data:`HEARTBEAT_S`; so does a worker's ``/status``.
* **Reload** (``POST /admin/reload``, SIGHUP to the supervisor, or the supervisor's config file
  watcher; workers do not watch): the supervisor loads the config first (a bad config is refused
  there, as without workers), then tells every worker to reload and waits for their answers, so a
  200 means every worker runs the new config. **Backend probes** (``/admin/backends/health``) run
  from the supervisor.
* **SIGTERM/SIGINT** to the supervisor: it signals every worker, each of which stops listening at
  once, lets its in-flight requests and streams finish (up to ``drain_timeout_ms``) and sends its
  last entries; the supervisor waits for them all, then exits 0. A worker still running
  :data:`KILL_AFTER_DRAIN_S` after the drain timeout is killed. Signals that arrive while the
  workers are still starting are held until they are.
* **A worker that dies** is logged and started again, after a pause that grows while it keeps dying
  young (:data:`BACKOFF_S`). It loads the config file as it is then (so while that file is invalid,
  it keeps failing, logged, and the others serve). A worker whose supervisor goes away (the
  channel closes) drains and exits by itself.

What stays per worker without ``redis_url``: client rate-limit buckets, stream caps, spend totals,
budgets and circuit breakers (with it, the workers share them as instances do: ``lm_gateway.cluster``);
and in any case concurrency gates (so a backend's ``max_concurrent`` applies per worker: N workers
allow N times as many calls) and classifier caches. The admin views show their sum.

Workers are started as ``<this python> -c 'from lm_gateway.workers import worker_main; ...'`` with the
supervisor's ``sys.path`` in ``PYTHONPATH``, so they run the same code however the supervisor was
installed (a virtualenv, ``pipx``, the zipapp).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import orjson

from lm_gateway.config import Config, ConfigError, load_config
from lm_gateway.http.server import Request, Response, json_response
from lm_gateway.server import Gateway
from lm_gateway.traffic import TrafficEntry, TrafficLog, entry_from_row, entry_row

log = logging.getLogger("lm_gateway.workers")

FLUSH_S = 0.02  # a worker sends its traffic entries at least this often...
MAX_BATCH = 256  # ... or as soon as it has this many
MAX_PENDING_BYTES = 4 * 1024 * 1024  # a worker drops entries rather than buffer more than this
HEARTBEAT_S = 1.0
READY_TIMEOUT_S = 30.0  # for every worker to start serving, at start-up
RELOAD_TIMEOUT_S = 15.0
KILL_AFTER_DRAIN_S = 5.0
LISTEN_BACKLOG = 1024  # as HttpServer.listen
CLOSE_TIMEOUT_S = 5.0  # for a stopping worker's last entries to be written to its channel
LIVED_LONG_S = 10.0  # a worker that ran this long before dying is restarted at once
BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # by how many times in a row it died young
CIRCUIT_ORDER = {"closed": 0, "half-open": 1, "open": 2}

SUPERVISOR_PID_ENV = "LMG_SUPERVISOR_PID"
WORKER_CODE = "from lm_gateway.workers import worker_main; worker_main()"

Message = dict[str, Any]


class Channel(asyncio.Protocol):
    """One end of a supervisor/worker socketpair: newline-delimited orjson messages, both ways."""

    def __init__(self, on_message: Callable[[Message], None]) -> None:
        self._on_message = on_message
        self._buffer = bytearray()
        self.transport: asyncio.WriteTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            line = bytes(buffer[start:end])
            start = end + 1
            try:
                self._on_message(orjson.loads(line))
            except Exception:  # one bad message must not end the channel (that would look like death)
                log.exception("bad message on a worker channel")
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, message: Message) -> bool:
        """Queue ``message`` without waiting; False (nothing sent) when closed or too far behind."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > MAX_PENDING_BYTES:
            return False
        transport.write(orjson.dumps(message, default=str) + b"\n")
        return True

    async def close(self) -> None:
        """Close after what is queued has been written (bounded by :data:`CLOSE_TIMEOUT_S`)."""
        if self.transport is not None:
            self.transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT_S)


async def open_channel(sock: socket.socket, on_message: Callable[[Message], None]) -> Channel:
    loop = asyncio.get_running_loop()
    _, channel = await loop.create_unix_connection(lambda: Channel(on_message), sock=sock)
    return channel


# -- the worker side ---------------------------------------------------------------------------------


class ForwardingTraffic(TrafficLog):
    """A worker's traffic log: it keeps nothing, and sends every entry to the supervisor, whose log is
    the one the admin port shows. ``/status`` on the client port shows the supervisor's totals."""

    def __init__(self) -> None:
        super().__init__(1)
        self.channel: Channel | None = None
        self.dropped = 0
        self.shared_stats: dict[str, Any] | None = None  # the supervisor's public_stats()
        self._rows: list[tuple[Any, ...]] = []
        self._timer: asyncio.TimerHandle | None = None

    def record(self, entry: TrafficEntry) -> None:
        for listener in self._listeners:  # this worker's own (spend caps): the supervisor has its own
            listener(entry)
        rows = self._rows
        rows.append(entry_row(entry))
        if len(rows) >= MAX_BATCH:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rows, self._rows = self._rows, []
        if rows and (self.channel is None or not self.channel.send({"t": "entries", "rows": rows})):
            self.dropped += len(rows)

    def public_stats(self) -> dict[str, Any]:
        return self.shared_stats if self.shared_stats is not None else super().public_stats()


class WorkerLink:
    """What a worker does on its channel: answer the supervisor's messages, send heartbeats."""

    def __init__(self, gateway: Gateway, traffic: ForwardingTraffic) -> None:
        self.gateway = gateway
        self.traffic = traffic
        self.lost = asyncio.Event()  # the supervisor is gone: drain and exit
        self._tasks: set[asyncio.Task[Any]] = set()

    async def connect(self, sock: socket.socket) -> Channel:
        channel = await open_channel(sock, self._on_message)
        channel.closed.add_done_callback(lambda _: self.lost.set())
        self.traffic.channel = channel
        self._spawn(self._heartbeats(channel))
        return channel

    def _on_message(self, message: Message) -> None:
        kind = message.get("t")
        if kind == "stats":
            self.traffic.shared_stats = message["public"]
        elif kind == "reload":
            self._spawn(self._reload(message["id"]))

    async def _reload(self, reload_id: int) -> None:
        problems = await self.gateway.reload()
        self._send({"t": "reloaded", "id": reload_id, "problems": problems})

    async def _heartbeats(self, channel: Channel) -> None:
        while not channel.closed.done():
            self._send(self.heartbeat())
            await asyncio.sleep(HEARTBEAT_S)

    def heartbeat(self) -> Message:
        traffic = self.traffic
        return {
            "t": "hb",
            "in_flight": traffic.in_flight,
            "open_streams": traffic.open_streams,
            "dropped": traffic.dropped,
            "backends": self.gateway.backend_runtime(),
        }

    def _send(self, message: Message) -> None:
        if self.traffic.channel is not None:
            self.traffic.channel.send(message)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish(self) -> None:
        """After the drain: send the last entries and a final heartbeat, then close the channel."""
        for task in list(self._tasks):
            task.cancel()
        self.traffic.flush()
        self._send(self.heartbeat())
        if self.traffic.channel is not None:
            await self.traffic.channel.close()


def worker_main(argv: Sequence[str] | None = None) -> None:
    """A worker process's entry point (started by :class:`Supervisor`, never by hand)."""
    from lm_gateway.__main__ import _install_uvloop, _setup_logging, _with_port_overrides

    args = _worker_args(argv)
    env_level = os.environ.get("LMG_LOG_LEVEL")
    _setup_logging(env_level or "info")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(args.slot))
    path = Path(args.config) if args.config else None
    try:
        config = _with_port_overrides(load_config(path), os.environ)
    except (ConfigError, ValueError) as err:
        log.error("worker %d cannot start, the config is invalid:\n%s", args.slot, err)
        raise SystemExit(2) from None
    if config.gateway.log_level and not env_level:
        logging.getLogger().setLevel(config.gateway.log_level.upper())
    _install_uvloop()
    channel = socket.socket(fileno=args.channel_fd)
    loader = (lambda: _with_port_overrides(load_config(path), os.environ)) if path is not None else None
    asyncio.run(_run_worker(config, loader, (args.host, args.port), channel, args.started_at))


class _WorkerTag(logging.Filter):
    """Name the worker in its log lines (as part of the logger's name, in text and JSON alike)."""

    def __init__(self, slot: int) -> None:
        super().__init__()
        self.suffix = f"[worker {slot}]"

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.endswith(self.suffix):
            record.name += self.suffix
        return True


def _worker_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lm-gateway worker")
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--started-at", type=float, required=True)
    parser.add_argument("--config")
    return parser.parse_args(argv)


async def _run_worker(
    config: Config,
    loader: Callable[[], Config] | None,
    address: tuple[str, int],
    channel_sock: socket.socket,
    started_at: float,
) -> None:
    traffic = ForwardingTraffic()
    gateway = Gateway(config, loader, traffic=traffic)
    gateway.started_at = started_at  # /status shows the service's uptime, not this worker's
    link = WorkerLink(gateway, traffic)
    channel = await link.connect(channel_sock)
    await gateway.start_client(bind_listener(*address, reuse_port=True))
    channel.send({"t": "ready", "pid": os.getpid()})
    await gateway.run_forever(link.lost)
    await link.finish()


# -- the supervisor side -----------------------------------------------------------------------------


class WorkerProcess:
    """One worker slot: its current process and channel, what its last heartbeat said, and restarts."""

    def __init__(self, supervisor: Supervisor, slot: int) -> None:
        self.supervisor = supervisor
        self.slot = slot
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: Channel | None = None
        # Per process: resolved when it says it serves (an OSError if it dies first), and at its exit.
        self.ready: asyncio.Future[None] | None = None
        self.exited: asyncio.Future[int] | None = None
        self.serving = False
        self.started = 0.0  # monotonic, of the current process
        self.restarts = 0
        self.died_young = 0  # deaths in a row of processes that lived less than LIVED_LONG_S
        self.heartbeat: Message = {}
        self.dropped_before = 0  # entries dropped by this slot's previous processes
        self._replies: dict[int, asyncio.Future[list[str]]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.exited is not None and not self.exited.done()

    def spawn(self) -> None:
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()
        self.exited = loop.create_future()
        self.serving = False
        self.heartbeat = {}
        ours, theirs = socket.socketpair()
        with theirs:
            self.proc = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
                self.supervisor.worker_argv(self.slot, theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                env=_worker_env(),
            )
        self.started = time.monotonic()
        self._task = loop.create_task(self._watch(ours))

    async def _watch(self, sock: socket.socket) -> None:
        """Serve the channel until it closes (the worker exited or is exiting), then reap it."""
        proc, ready, exited = self.proc, self.ready, self.exited
        assert proc is not None and ready is not None and exited is not None
        try:
            self.channel = await open_channel(sock, self._on_message)
            await self.channel.closed
        finally:
            self.channel = None
            status = await asyncio.to_thread(proc.wait)
            self.serving = False
            self.dropped_before += int(self.heartbeat.get("dropped", 0))
            self.heartbeat = {}
            for reply in self._replies.values():
                if not reply.done():
                    reply.set_result([])
            self._replies.clear()
            if not ready.done():
                ready.set_exception(OSError(f"worker {self.slot} exited ({_describe(status)})"))
                ready.exception()  # marked as retrieved: start() reports it, a restart is logged
            exited.set_result(status)
            self.supervisor.worker_exited(self, status)

    def _on_message(self, message: Message) -> None:
        kind = message.get("t")
        if kind == "entries":
            self.supervisor.ingest(message["rows"], self.pid)
        elif kind == "hb":
            self._on_heartbeat(message)
        elif kind == "ready":
            self.serving = True
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(None)
        elif kind == "reloaded":
            reply = self._replies.pop(message["id"], None)
            if reply is not None and not reply.done():
                reply.set_result(list(message["problems"]))

    def _on_heartbeat(self, message: Message) -> None:
        dropped = int(message.get("dropped", 0))
        if dropped > int(self.heartbeat.get("dropped", 0)):
            log.warning("worker %d (pid %s) has dropped %d traffic entries", self.slot, self.pid, dropped)
        self.heartbeat = message
        self.supervisor.gauges_changed()
        self.send({"t": "stats", "public": self.supervisor.traffic.public_stats()})

    def send(self, message: Message) -> bool:
        return self.channel is not None and self.channel.send(message)

    async def reload(self, reload_id: int) -> list[str]:
        """Tell the worker to reload; its problems (none when it is not running: it will load the
        file when it starts)."""
        if not self.serving:
            return []
        reply = asyncio.get_running_loop().create_future()
        self._replies[reload_id] = reply
        if not self.send({"t": "reload", "id": reload_id}):
            self._replies.pop(reload_id, None)
            return []
        try:
            return await asyncio.wait_for(reply, RELOAD_TIMEOUT_S)
        except TimeoutError:
            log.error(
                "worker %d (pid %s) did not answer the reload in %.0f s",
                self.slot,
                self.pid,
                RELOAD_TIMEOUT_S,
            )
            return []

    def signal(self, sig: int) -> None:
        if self.alive and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def view(self) -> dict[str, Any]:
        heartbeat = self.heartbeat
        return {
            "slot": self.slot,
            "pid": self.pid,
            "alive": self.alive,
            "serving": self.serving,
            "restarts": self.restarts,
            "uptime_secs": int(time.monotonic() - self.started) if self.alive else 0,
            "in_flight": heartbeat.get("in_flight", 0),
            "open_streams": heartbeat.get("open_streams", 0),
            "dropped_entries": self.dropped_before + int(heartbeat.get("dropped", 0)),
        }


class Supervisor(Gateway):
    """The ``--workers N`` parent: owns the client socket and the admin port, starts, watches,
    reloads and drains the workers, and keeps the one traffic log they all feed."""

    def __init__(
        self,
        config: Config,
        loader: Callable[[], Config] | None,
        workers: int,
        config_path: Path | None,
    ) -> None:
        super().__init__(config, loader)
        self.config_path = config_path
        self.workers = [WorkerProcess(self, slot) for slot in range(workers)]
        self._anchor: socket.socket | None = None  # holds the client port (bound, not listening)
        self._started = False  # every worker served once: from now on, a worker that dies is restarted
        self._stopping = False
        self._reloads = 0
        self._respawns: dict[int, asyncio.TimerHandle] = {}  # by slot
        self._stop_requested = asyncio.Event()  # by a signal received while start() runs, or after
        self._admin_api.add_route("GET", "/admin/workers", self.workers_view)

    async def start(self) -> None:
        """:meth:`Gateway.start`, whose client listener is the workers (:meth:`start_client`); if
        anything fails, the workers already started are stopped."""
        try:
            await super().start()
        except BaseException:
            await self.stop(drain_timeout=0)
            raise

    async def start_client(self, sock: socket.socket | None = None) -> None:
        """Hold the client port, start the workers and wait until each serves it."""
        # The first worker serves before the others are ready and run_forever() takes the signals
        # over: a stop or a reload asked for meanwhile must not kill the supervisor outright.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_requested.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_in_background)
        gateway = self.state.config.gateway
        self._anchor = bind_listener(gateway.client_host, gateway.client_port, reuse_port=True, listen=False)
        self.client_port = int(self._anchor.getsockname()[1])
        for worker in self.workers:
            worker.spawn()
        ready = [asyncio.shield(w.ready) for w in self.workers if w.ready is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*ready), READY_TIMEOUT_S)
        except (OSError, TimeoutError) as err:
            raise OSError(f"the workers did not start: {err or 'timed out'}") from None
        self._started = True

    def _report_startup(self) -> None:
        super()._report_startup()
        pids = ", ".join(str(w.pid) for w in self.workers)
        log.info("%d workers serving the client port (pids %s)", len(self.workers), pids)

    async def run_forever(self, stop_requested: asyncio.Event | None = None) -> None:
        await super().run_forever(stop_requested or self._stop_requested)

    def worker_argv(self, slot: int, channel_fd: int) -> list[str]:
        host = self.state.config.gateway.client_host
        argv = [sys.executable, "-c", WORKER_CODE, "--slot", str(slot), "--channel-fd", str(channel_fd)]
        argv += ["--host", host, "--port", str(self.client_port), "--started-at", repr(self.started_at)]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        return argv

    def ingest(self, rows: list[list[Any]], pid: int | None) -> None:
        """Record a worker's batch of traffic entries in the supervisor's log."""
        record = self.traffic.record
        for row in rows:
            record(entry_from_row(row, "worker", pid))

    def gauges_changed(self) -> None:
        """The in-flight gauges the admin views read are the sums of the workers' last heartbeats."""
        beats = [w.heartbeat for w in self.workers]
        self.traffic.in_flight = sum(int(b.get("in_flight", 0)) for b in beats)
        self.traffic.open_streams = sum(int(b.get("open_streams", 0)) for b in beats)

    def backend_runtime(self) -> dict[str, dict[str, Any]]:
        reports = [w.heartbeat["backends"] for w in self.workers if "backends" in w.heartbeat]
        return merge_backend_runtime(super().backend_runtime(), reports)

    def worker_exited(self, worker: WorkerProcess, status: int) -> None:
        self.gauges_changed()
        if self._stopping:
            log.info("worker %d (pid %s) exited (%s)", worker.slot, worker.pid, _describe(status))
            return
        if not self._started:
            return  # start() reports it
        lived = time.monotonic() - worker.started
        worker.died_young = worker.died_young + 1 if lived < LIVED_LONG_S else 0
        delay = BACKOFF_S[min(worker.died_young, len(BACKOFF_S) - 1)]
        log.error(
            "worker %d (pid %s) exited unexpectedly (%s) after %.1f s; restarting it in %.1f s",
            worker.slot,
            worker.pid,
            _describe(status),
            lived,
            delay,
        )
        self._respawns[worker.slot] = asyncio.get_running_loop().call_later(delay, self._respawn, worker)

    def _respawn(self, worker: WorkerProcess) -> None:
        self._respawns.pop(worker.slot, None)
        if self._stopping:
            return
        worker.restarts += 1
        worker.spawn()
        assert worker.ready is not None
        worker.ready.add_done_callback(lambda ready: _log_restarted(worker, ready))

    async def reload(self) -> list[str]:
        """Reload here first (a bad config stops here), then in every worker."""
        problems = await super().reload()
        if problems:
            return problems
        self._reloads += 1
        answers = await asyncio.gather(*(w.reload(self._reloads) for w in self.workers))
        problems = [f"worker {w.slot}: {p}" for w, a in zip(self.workers, answers, strict=True) for p in a]
        if problems:
            log.error("config reload refused by a worker:\n%s", "\n".join(problems))
        return problems

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Drain every worker (they finish their in-flight requests and streams), then the admin port."""
        if drain_timeout is None:
            drain_timeout = self.state.config.gateway.drain_timeout_ms / 1000
        self._stopping = True
        for handle in self._respawns.values():
            handle.cancel()
        for worker in self.workers:
            worker.signal(signal.SIGTERM)  # each stops listening at once, then drains
        running = [w.exited for w in self.workers if w.alive and w.exited is not None]
        if running:
            await asyncio.wait(running, timeout=drain_timeout + KILL_AFTER_DRAIN_S)
        for worker in self.workers:
            if worker.alive:
                log.error("worker %d (pid %s) did not stop in time; killing it", worker.slot, worker.pid)
                worker.signal(signal.SIGKILL)
        if late := [w.exited for w in self.workers if w.alive and w.exited is not None]:
            await asyncio.wait(late)
        if self._anchor is not None:
            self._anchor.close()
        await super().stop(drain_timeout)

    async def workers_view(self, request: Request) -> Response:
        """``GET /admin/workers``: each worker's pid, state, restarts, gauges and dropped entries."""
        return json_response(200, {"workers": [w.view() for w in self.workers]})


def _log_restarted(worker: WorkerProcess, ready: asyncio.Future[None]) -> None:
    if not ready.cancelled() and ready.exception() is None:
        log.info("worker %d restarted (pid %s)", worker.slot, worker.pid)


def bind_listener(host: str, port: int, *, reuse_port: bool, listen: bool = True) -> socket.socket:
    """A socket bound to the first address ``host`` resolves to (the same one in the supervisor and
    every worker), with ``SO_REUSEPORT`` so that they can all bind it."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if listen:
            sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def merge_backend_runtime(
    own: dict[str, dict[str, Any]], reports: list[dict[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """The workers' circuit breakers and gates as one: a circuit is as bad as the worst worker's
    (open > half-open > closed; windows and failures add up), gates add up (each worker has its own,
    so the gateway-wide ``max_concurrent`` is N times the configured one). Backends the workers have
    not reported yet (right after a reload) show the supervisor's own, idle state."""
    merged: dict[str, dict[str, Any]] = {}
    for name, mine in own.items():
        seen = [report[name] for report in reports if name in report]
        if not seen:
            merged[name] = mine
            continue
        circuits = [s["circuit"] for s in seen if s.get("circuit")]
        gates = [s["gate"] for s in seen if s.get("gate")]
        merged[name] = {
            "circuit": _merge_circuits(circuits) if circuits else mine["circuit"],
            "gate": {key: sum(g[key] for g in gates) for key in gates[0]} if gates else mine["gate"],
        }
    return merged


def _merge_circuits(circuits: list[dict[str, Any]]) -> dict[str, Any]:
    worst = max(circuits, key=lambda c: CIRCUIT_ORDER.get(c["state"], 0))
    return {
        "state": worst["state"],
        "window": sum(c["window"] for c in circuits),
        "failures": sum(c["failures"] for c in circuits),
        "retry_in_s": max(c["retry_in_s"] for c in circuits),
        "opened_elsewhere": any(c.get("opened_elsewhere") for c in circuits),
    }


def _worker_env() -> dict[str, str]:
    """The supervisor's environment, with its ``sys.path`` so that the worker imports the same code,
    and the supervisor's pid (workers name themselves after it in a cluster: one instance, not N)."""
    paths = [p for p in sys.path if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), SUPERVISOR_PID_ENV: str(os.getpid())}


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"exit code {status}"
