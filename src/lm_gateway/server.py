"""The gateway process: both listeners on one event loop, reload, and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm_gateway.api.admin import AdminAPI
from lm_gateway.api.auth import FailedAdminAttempts
from lm_gateway.api.client import ClientAPI
from lm_gateway.api.limits import server_limits
from lm_gateway.api.metrics import backend_runtime, track_in_flight
from lm_gateway.api.openapi import serve_openapi
from lm_gateway.backends import Backend
from lm_gateway.config import Config, ConfigError
from lm_gateway.config.secrets import secret_files
from lm_gateway.config.watch import ConfigWatcher
from lm_gateway.http.server import HttpServer, ServerLimits
from lm_gateway.router.cost import CostLedger
from lm_gateway.router.upstream import circuits_of
from lm_gateway.state import GatewayState, build_state
from lm_gateway.traffic import TrafficLog

if TYPE_CHECKING:
    from lm_gateway.cluster import Cluster

log = logging.getLogger("lm_gateway")

# How long a retired backend adapter (after a reload) keeps its pool for requests still using it.
RETIRE_GRACE_S = 120.0


class Gateway:
    def __init__(
        self,
        config: Config,
        loader: Callable[[], Config] | None = None,
        traffic: TrafficLog | None = None,
    ) -> None:
        self.state: GatewayState = build_state(config)[0]
        # ``traffic``: a --workers worker passes a log that forwards its entries to the supervisor.
        self.traffic = traffic if traffic is not None else TrafficLog(config.gateway.traffic_log_capacity)
        # Cost per tier, profile and client since start (the traffic ring only holds the recent).
        self.costs = CostLedger()
        self.traffic.subscribe(self.costs.record)
        self.started_at = time.time()
        self.client_port = config.gateway.client_port
        self.admin_port = config.gateway.admin_port
        self._loader = loader
        self._client_api = ClientAPI(self)
        self.admin_attempts = FailedAdminAttempts()  # wrong admin tokens, per address (both admin routes)
        self._admin_api = AdminAPI(self)
        self._servers: list[HttpServer] = []
        self._stopped = asyncio.Event()
        self._retire_tasks: set[asyncio.Task[object]] = set()
        # Security and reload (issue #6): the client port's limits (updated in place by a reload)
        # and the config file watcher.
        self._client_limits = server_limits(config.gateway)
        self._watcher: ConfigWatcher | None = None
        self.client_server: HttpServer | None = None  # the client listener, once started
        self._stop_tracing: Callable[[], None] | None = None
        # Several instances (gateway.redis_url): the shared state, the cluster's traffic and its cost.
        self.cluster: Cluster | None = None
        self._cluster_traffic: TrafficLog | None = None
        self._cluster_costs: CostLedger | None = None

    @property
    def tracing_enabled(self) -> bool:
        return self._stop_tracing is not None

    def uptime(self) -> float:
        return time.time() - self.started_at

    async def start(self) -> None:
        # Admin first: once the client port answers (what health checks watch), the admin port does
        # too, also with --workers, whose client port comes up as the first worker does.
        await self.start_admin()
        await self.start_client()
        self.start_watcher()
        endpoint = self.state.config.gateway.otlp_endpoint
        if endpoint:  # spans are built from the traffic log, so only the process that holds it traces
            from lm_gateway.tracing import start_tracing

            self._stop_tracing = start_tracing(endpoint, self.traffic)
        self._report_startup()

    async def start_client(self, sock: socket.socket | None = None) -> None:
        """Open the client listener. ``sock``: an already listening socket, served as it is instead
        of binding ``client_host:client_port`` (a ``--workers`` worker's, bound with SO_REUSEPORT)."""
        self.traffic.subscribe(self._client_api.record_spend)
        cluster = await self._join_cluster()
        if cluster is not None:  # before listening: the first request already sees the shared limits
            cluster.share_limits(self._client_api.limit_stores)
            cluster.share_budgets(self.state.table.budgets)
            cluster.share_circuits(lambda: circuits_of(self.state.backends))
        loop = asyncio.get_running_loop()
        gateway = self.state.config.gateway
        client = HttpServer(track_in_flight(self._client_api.handle, self.traffic), self._client_limits, loop)
        self.client_port = await client.listen(gateway.client_host, gateway.client_port, sock=sock)
        self.client_server = client
        self._servers.append(client)

    async def start_admin(self) -> None:
        loop = asyncio.get_running_loop()
        gateway = self.state.config.gateway
        admin_limits = ServerLimits(max_body_bytes=1024 * 1024)
        admin = HttpServer(serve_openapi(self, self._admin_api.handle), admin_limits, loop)
        self.admin_port = await admin.listen(gateway.admin_host, gateway.admin_port)
        self._servers.append(admin)
        cluster = await self._join_cluster()
        if cluster is not None:  # the process holding the traffic log publishes it
            self._cluster_traffic = cluster.share_traffic(self.traffic)
            self._cluster_costs = CostLedger()
            self._cluster_traffic.subscribe(self._cluster_costs.record)

    async def _join_cluster(self) -> Cluster | None:
        """The cluster link (made on first call) when ``gateway.redis_url`` is set; else None, and
        the Redis client is never imported."""
        config = self.state.config
        if self.cluster is None and config.redis_url is not None:
            from lm_gateway.cluster import Cluster

            self.cluster = Cluster(config)
            await self.cluster.start()
        return self.cluster

    def traffic_view(self, scope: str) -> TrafficLog:
        """The traffic the admin side shows: ``cluster`` (every instance's) or ``instance``."""
        if scope == "cluster" and self._cluster_traffic is not None:
            return self._cluster_traffic
        return self.traffic

    def costs_view(self, scope: str) -> CostLedger:
        if scope == "cluster" and self._cluster_costs is not None:
            return self._cluster_costs
        return self.costs

    def backend_runtime(self) -> dict[str, dict[str, Any]]:
        """Each backend's circuit breaker and concurrency gate, as the admin API and /metrics show
        them (the ``--workers`` supervisor overrides this with the sum of its workers' states)."""
        return backend_runtime(self.state)

    def _report_startup(self) -> None:
        state = self.state
        gateway = state.config.gateway
        log.info("config loaded from %s", state.config.source)
        log.info(
            "client API on http://%s:%d, admin API on http://%s:%d",
            gateway.client_host,
            self.client_port,
            gateway.admin_host,
            self.admin_port,
        )
        for warning in (*state.config.warnings, *state.table.warnings):
            log.warning("%s", warning)
        for missing in state.config.missing_secrets:
            log.warning("missing secret: %s", missing)
        if state.clients_locked:
            log.error(
                "[[clients]] are configured but none of their keys is set: "
                "the client API refuses every request"
            )
        if state.admin_locked:
            log.error("gateway.admin_token_env names an unset variable: the admin API refuses every request")

    async def reload(self) -> list[str]:
        """Load the config again; on success swap it in, on failure keep the old one and say why."""
        if self._loader is None:
            return ["this gateway runs the embedded default config; there is no file to reload"]
        try:
            config = await asyncio.to_thread(self._loader)
        except ConfigError as err:
            log.error("config reload refused:\n%s", err)
            return list(err.problems)
        state, retired = build_state(config, self.state)
        if self.cluster is not None:
            self.cluster.share_budgets(state.table.budgets)
        if _redis_url(config) != _redis_url(self.state.config):
            log.warning("gateway.redis_url changed in the config; it takes effect at the next restart")
        self.state = state
        self._client_limits.update(server_limits(config.gateway))
        self.traffic.resize(config.gateway.traffic_log_capacity)
        if self.cluster is not None and self.cluster.traffic is not None:
            self.cluster.traffic.resize(config.gateway.traffic_log_capacity)
        if self._servers and (
            config.gateway.client_port not in (0, self.client_port)
            or config.gateway.admin_port not in (0, self.admin_port)
        ):
            log.warning("ports changed in the config; they take effect at the next restart")
        for backend in retired:
            self._retire(backend)
        log.info("config reloaded from %s", config.source)
        return []

    def start_watcher(self) -> None:
        """Reload when the config files change (``gateway.watch_config``, polled; it can be turned on
        and off by a reload). Only for a config read from a file."""
        source = Path(self.state.config.source)
        if self._loader is None or self._watcher is not None or not source.is_file():
            return
        self._watcher = ConfigWatcher(
            source,
            lambda: self.state.config.gateway,
            self.reload,
            secret_files=lambda: secret_files(self.state.config),
        )
        self._watcher.start()

    def _reload_in_background(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._retire_tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._retire_tasks.discard)

    def _retire(self, backend: Backend) -> None:
        async def close_later() -> None:
            await asyncio.sleep(RETIRE_GRACE_S)
            await backend.close()

        task = asyncio.get_running_loop().create_task(close_later())
        self._retire_tasks.add(task)
        task.add_done_callback(self._retire_tasks.discard)

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests and streams finish, then close upstream pools."""
        if drain_timeout is None:
            drain_timeout = self.state.config.gateway.drain_timeout_ms / 1000
        if self._watcher is not None:
            await self._watcher.stop()
        self._admin_api.end_feeds()  # open dashboards must not hold up the drain
        await asyncio.gather(*(server.drain(drain_timeout) for server in self._servers))
        for task in list(self._retire_tasks):
            task.cancel()
        await asyncio.gather(*(b.close() for b in self.state.backends.values()), return_exceptions=True)
        if self.cluster is not None:  # after the drain: the last entries and charges are sent
            await self.cluster.stop()
        if self._stop_tracing is not None:
            await asyncio.to_thread(self._stop_tracing)  # flushes the spans still queued
            self._stop_tracing = None
        self._stopped.set()

    async def run_forever(self, stop_requested: asyncio.Event | None = None) -> None:
        """After :meth:`start`: serve until SIGTERM/SIGINT (or ``stop_requested``: a --workers worker
        whose supervisor is gone), then drain and return. SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        stop_requested = stop_requested or asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_in_background)
        await stop_requested.wait()
        log.info("shutting down: draining in-flight requests")
        await self.stop()
        log.info("stopped")


def _redis_url(config: Config) -> str | None:
    return config.redis_url.reveal() if config.redis_url is not None else None
