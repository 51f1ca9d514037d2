"""Run an asyncio server in a background thread with its own event loop.

Why: the sync ``openai`` / ``anthropic`` clients block the calling thread, so whatever they talk to must
run elsewhere. A private loop per server also keeps servers independent of the test's loop (a slow or
hung fake cannot stall the gateway under test, and vice versa).

Two spellings:

* ``ServerThread(server)`` for anything with ``async start()`` / ``async stop()`` (the fakes, the
  gateway); ``port`` and ``url`` are read from the server.
* ``run_in_thread(start_fn, stop_fn)`` for loose callables; ``port`` then comes from what ``start_fn``
  returned (an ``int``, or an object with ``.port``).

``stop()`` runs the server's own stop, cancels whatever tasks remain on the loop (counted in
``leftover_tasks`` so a test can assert a clean shutdown), closes the loop and joins the thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, Self, TypeVar

T = TypeVar("T")


class AsyncServer(Protocol):
    async def start(self) -> Any: ...

    async def stop(self) -> Any: ...


class ServerThread:
    """A server running on its own event loop in a daemon thread; also a context manager."""

    def __init__(
        self,
        server: AsyncServer | None = None,
        *,
        start: Callable[[], Awaitable[Any]] | None = None,
        stop: Callable[[], Awaitable[Any]] | None = None,
        name: str = "server-thread",
        timeout: float = 10.0,
    ) -> None:
        if server is not None:
            start, stop = server.start, server.stop
        if start is None or stop is None:
            raise TypeError("ServerThread needs a server, or both start and stop callables")
        self.server = server
        self.name = name
        self.timeout = timeout
        self.started: Any = None
        """What the start callable returned."""
        self.leftover_tasks = 0
        """Tasks still alive after the server's stop (cancelled by ``stop()``); 0 means a clean stop."""
        self._start_fn = start
        self._stop_fn = stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running = False

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the thread and the server; returns once the server's start() has returned (for the
        fakes and the gateway, that is once the socket is listening). Re-raises start() errors."""
        if self._running:
            raise RuntimeError(f"{self.name} already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(self.timeout):
            raise TimeoutError(f"{self.name}: event loop did not start")
        self._running = True
        try:
            self.started = self.call(self._start_fn)
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server, then the loop and the thread. Idempotent."""
        if not self._running:
            return
        try:
            self.call(self._stop_fn)
        finally:
            self._shutdown_loop()

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``fn()`` on the server's loop from any other thread and return its result."""
        loop = self._loop
        if loop is None or not self._running:
            raise RuntimeError(f"{self.name} is not running")

        async def run() -> T:
            return await fn()

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        return future.result(self.timeout if timeout is None else timeout)

    def __enter__(self) -> Self:
        return self if self._running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, f"{self.name} is not running"
        return self._loop

    @property
    def port(self) -> int:
        for source in (self.server, self.started):
            port = source if isinstance(source, int) else getattr(source, "port", None)
            if isinstance(port, int):
                return port
        raise AttributeError(f"{self.name}: neither the server nor start()'s result gives a port")

    @property
    def url(self) -> str:
        url = getattr(self.server, "url", None)
        return url if isinstance(url, str) else f"http://127.0.0.1:{self.port}"

    # -- thread body ------------------------------------------------------------------------------

    def _main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
            self.leftover_tasks = len(leftovers)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            asyncio.set_event_loop(None)
            loop.close()

    def _shutdown_loop(self) -> None:
        self._running = False
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(self.timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"{self.name}: thread did not stop within {self.timeout}s")
        self._thread = None
        self._loop = None


def run_in_thread(
    start: Callable[[], Awaitable[Any]],
    stop: Callable[[], Awaitable[Any]],
    *,
    name: str = "server-thread",
    timeout: float = 10.0,
) -> ServerThread:
    """Start ``start()`` on a fresh loop in a background thread and return the running handle; call
    ``.stop()`` (or use it in a ``with``) to run ``stop()`` and tear the thread down."""
    return ServerThread(start=start, stop=stop, name=name, timeout=timeout).start()
