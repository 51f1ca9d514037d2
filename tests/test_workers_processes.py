"""``lm-gateway --workers 2``, as real processes on real sockets: both workers serve one client port,
the admin port shows all of their traffic (exact counts, the live feed, /metrics, /status), reload
reaches every worker, SIGTERM drains a stream in flight and exits 0, a killed worker is restarted,
and workers do not outlive a supervisor that was killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Stream
from .gateway import DEMO, config_text, free_port, openai_backend_config

CHAT = {"model": "hint:fast", "messages": [{"role": "user", "content": "ping"}]}


def wait_for(check: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, OSError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Workers:
    """``python -m lm_gateway serve --config PATH --workers N`` on free loopback ports."""

    def __init__(self, config: Path, workers: int = 2) -> None:
        self.client_port, self.admin_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("LMG_CONFIG", "LMG_WORKERS")}
        env |= {"LMG_CLIENT_PORT": str(self.client_port), "LMG_ADMIN_PORT": str(self.admin_port)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lm_gateway", "serve", "--config", str(config), "--workers", str(workers)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self._log: list[str] = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        wait_for(lambda: "ready in" in self.log() or self.proc.poll() is not None, 20, "start-up")
        assert self.proc.poll() is None, self.log()

    def _read_log(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.append(line)

    def log(self) -> str:
        return "".join(self._log)

    def get(self, path: str) -> Any:
        return httpx.get(self.admin + path, timeout=10).json()

    def workers(self) -> list[dict[str, Any]]:
        workers: list[dict[str, Any]] = self.get("/admin/workers")["workers"]
        return workers

    def chat(self, **extra: Any) -> httpx.Response:
        """One request on a fresh connection (the kernel picks the worker for each connection)."""
        return httpx.post(self.url + "/v1/chat/completions", json={**CHAT, **extra}, timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for worker in self._last_pids():
            _kill_quietly(worker)

    def _last_pids(self) -> list[int]:
        return [int(p) for p in _pids_in(self.log())]


def _pids_in(log: str) -> list[str]:
    for line in log.splitlines():
        if "workers serving the client port (pids" in line:
            return line.split("(pids ")[1].rstrip(")").split(", ")
    return []


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Workers]]:
    running: list[Workers] = []

    def start(body: str = DEMO, workers: int = 2) -> Workers:
        path = tmp_path / "config.toml"
        path.write_text(config_text(body))
        gateway = Workers(path, workers)
        running.append(gateway)
        return gateway

    yield start
    for gateway in running:
        gateway.stop()


def serve_until_both_workers(gw: Workers, send: Callable[[], httpx.Response], at_least: int = 20) -> set[int]:
    """Send requests on fresh connections until both workers have served some; their pids."""
    for sent in range(1, 400):
        assert send().status_code == 200
        if sent >= at_least:
            pids = {e["worker"] for e in gw.get(f"/admin/traffic?limit={sent}")["entries"] if "worker" in e}
            if len(pids) == 2:
                return pids
    raise AssertionError("one worker served every connection")


def test_both_workers_serve_and_the_admin_port_adds_up_all_of_their_traffic(
    start: Callable[..., Workers],
) -> None:
    gw = start()
    workers = gw.workers()
    assert len(workers) == 2 and all(w["serving"] for w in workers)
    pids = {w["pid"] for w in workers}
    assert len(pids) == 2 and os.getpid() not in pids

    feed = _LiveFeed(gw.admin + "/admin/traffic/stream?backlog=0")
    ok, streams, unknown = 40, 10, 6
    for _ in range(ok):
        assert gw.chat().status_code == 200
    for _ in range(streams):
        assert gw.chat(stream=True).text.rstrip().endswith("data: [DONE]")
    for _ in range(unknown):
        assert gw.chat(model="no-such-model").status_code == 404
    total = ok + streams + unknown

    stats = wait_for(
        lambda: (s := gw.get("/admin/traffic?limit=1000"))["stats"]["total_requests"] == total and s,
        what="every entry to reach the supervisor",
    )["stats"]
    assert stats["status_counts"] == {"200": ok + streams, "404": unknown}
    assert stats["stream_count"] == streams
    entries = gw.get("/admin/traffic?limit=1000")["entries"]
    assert len(entries) == total
    served_by = {e["worker"] for e in entries}
    assert served_by == pids, "both workers served, and every entry names its worker"

    # The dashboard's stats are cached for half a second.
    wait_for(lambda: gw.get("/admin/stats")["totals"]["total"] == total, what="/admin/stats")
    metrics = httpx.get(gw.admin + "/metrics", timeout=10).text
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("lmg_requests_total{")
    )
    assert counted == total
    # /status on the client port (any worker) shows the total of all workers, not its own.
    wait_for(lambda: httpx.get(gw.url + "/status").json()["requests"]["total"] == total, what="/status")

    fed = feed.entries(total)
    assert len(fed) == total and {e["worker"] for e in fed} == pids
    feed.close()


class _LiveFeed:
    """The dashboard's SSE feed, read in a thread."""

    def __init__(self, url: str) -> None:
        self._entries: list[dict[str, Any]] = []
        self._client = httpx.Client(timeout=30)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _read(self, url: str) -> None:
        event = ""
        try:
            with self._client.stream("GET", url) as resp:
                for line in resp.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        self._ready.set()
                        if event == "entries":
                            self._entries.extend(json.loads(line[6:])["entries"])
        except httpx.HTTPError:
            pass

    def entries(self, count: int) -> list[dict[str, Any]]:
        wait_for(lambda: len(self._entries) >= count, what=f"{count} entries on the live feed")
        return list(self._entries)

    def close(self) -> None:
        self._client.close()


def test_reload_reaches_every_worker(start: Callable[..., Workers], tmp_path: Path) -> None:
    gw = start()
    assert gw.chat(model="hint:new").status_code == 404
    path = tmp_path / "config.toml"
    path.write_text(
        config_text(DEMO.replace("[profiles.default]", '"hint:new" = "local:demo"\n[profiles.default]'))
    )
    reply = httpx.post(gw.admin + "/admin/reload", timeout=20)
    assert reply.status_code == 200, reply.text
    pids = serve_until_both_workers(gw, lambda: gw.chat(model="hint:new"))
    assert pids == {w["pid"] for w in gw.workers()}

    # SIGHUP to the supervisor reloads every worker too.
    path.write_text(
        config_text(DEMO.replace("[profiles.default]", '"hint:hup" = "local:demo"\n[profiles.default]'))
    )
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: gw.chat(model="hint:hup").status_code == 200, what="the SIGHUP reload")
    time.sleep(0.5)  # both workers answered the supervisor before this point; give the log a moment
    serve_until_both_workers(gw, lambda: gw.chat(model="hint:hup"))
    assert gw.chat(model="hint:new").status_code == 404

    # A bad config is refused by the supervisor and changes nothing anywhere.
    path.write_text("[gateway\nbroken")
    refused = httpx.post(gw.admin + "/admin/reload", timeout=20)
    assert refused.status_code == 422
    serve_until_both_workers(gw, lambda: gw.chat(model="hint:hup"))


def test_sigterm_lets_a_stream_in_flight_on_a_worker_finish_then_exits_zero(
    start: Callable[..., Workers],
) -> None:
    with OpenAIBackend() as fake:
        fake.script(Stream(chunks=[f"c{i} " for i in range(8)], delay=0.15))
        gw = start(openai_backend_config(fake.url))
        pids = [w["pid"] for w in gw.workers()]
        received: list[str] = []
        first_chunk = threading.Event()

        def consume() -> None:
            body = {**CHAT, "stream": True}
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=20) as resp:
                for line in resp.iter_lines():
                    received.append(line)
                    if '"c0 "' in line:
                        first_chunk.set()

        reader = threading.Thread(target=consume)
        reader.start()
        assert first_chunk.wait(10)
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no worker accepts new connections any more
            httpx.get(gw.url + "/healthz", timeout=1)
        reader.join(20)
        assert gw.proc.wait(15) == 0, gw.log()
    text = "".join(received)
    assert all(f"c{i} " in text for i in range(8)) and "data: [DONE]" in text
    assert not any(_alive(pid) for pid in pids)
    log = gw.log()
    assert log.count("exited (exit code 0)") == 2, log


def test_a_killed_worker_is_restarted_and_the_others_keep_serving(start: Callable[..., Workers]) -> None:
    gw = start()
    before = {w["slot"]: w["pid"] for w in gw.workers()}
    os.kill(before[0], signal.SIGKILL)
    assert all(gw.chat().status_code == 200 for _ in range(10)), "the other worker serves meanwhile"
    restarted = wait_for(
        lambda: (w := gw.workers()[0])["serving"] and w["pid"] != before[0] and w,
        what="the killed worker's replacement",
    )
    assert restarted["restarts"] == 1
    assert gw.workers()[1]["pid"] == before[1] and gw.workers()[1]["restarts"] == 0
    pids = serve_until_both_workers(gw, gw.chat)
    assert pids == {restarted["pid"], before[1]}
    log = gw.log()
    assert f"worker 0 (pid {before[0]}) exited unexpectedly (signal SIGKILL)" in log
    assert f"worker 0 restarted (pid {restarted['pid']})" in log
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(15) == 0


def test_workers_exit_when_their_supervisor_is_killed(start: Callable[..., Workers]) -> None:
    gw = start()
    pids = [w["pid"] for w in gw.workers()]
    gw.proc.kill()
    gw.proc.wait(10)
    wait_for(lambda: not any(_alive(pid) for pid in pids), 15, "the orphaned workers to exit")


def test_workers_flag_is_checked() -> None:
    for bad in ("0", "-1", "two"):
        result = subprocess.run(
            [sys.executable, "-m", "lm_gateway", "serve", "--workers", bad],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode == 2 and "--workers" in result.stderr, bad


def test_backend_gates_and_circuits_show_the_sum_of_all_workers(start: Callable[..., Workers]) -> None:
    gw = start(
        DEMO.replace(
            'base_url = "http://demo.invalid"', 'base_url = "http://demo.invalid"\nmax_concurrent = 3'
        )
    )
    wait_for(
        lambda: all(w["uptime_secs"] >= 0 for w in gw.workers()) and _heartbeats_in(gw), what="heartbeats"
    )
    demo = next(b for b in gw.get("/admin/stats")["backends"] if b["backend"] == "demo")
    assert demo["gate"] == {"max_concurrent": 6, "in_flight": 0, "queued": 0}  # 3 per worker
    assert demo["circuit"]["state"] == "closed"


def _heartbeats_in(gw: Workers) -> bool:
    """Both workers have reported their gates (the supervisor's own idle gate shows 3)."""
    demo = next(b for b in gw.get("/admin/stats")["backends"] if b["backend"] == "demo")
    return bool(demo["gate"]["max_concurrent"] == 6)


def test_merging_backend_states() -> None:
    from lm_gateway.workers import merge_backend_runtime

    circuit = {"state": "closed", "window": 4, "failures": 0, "retry_in_s": 0.0, "opened_elsewhere": False}
    own = {
        "a": {"circuit": circuit, "gate": {"max_concurrent": 2, "in_flight": 0, "queued": 0}},
        "b": {"circuit": circuit, "gate": None},
    }
    one = {
        "a": {
            "circuit": {**circuit, "state": "open", "failures": 3, "retry_in_s": 12.5},
            "gate": {"max_concurrent": 2, "in_flight": 2, "queued": 5},
        },
        "b": {"circuit": circuit, "gate": None},
    }
    two = {
        "a": {
            "circuit": {**circuit, "state": "half-open", "failures": 1},
            "gate": {"max_concurrent": 2, "in_flight": 1, "queued": 0},
        }
    }
    merged = merge_backend_runtime(own, [one, two])
    assert merged["a"]["circuit"] == {
        "state": "open",
        "window": 8,
        "failures": 4,
        "retry_in_s": 12.5,
        "opened_elsewhere": False,
    }
    assert merged["a"]["gate"] == {"max_concurrent": 4, "in_flight": 3, "queued": 5}
    assert merged["b"] == {"circuit": {**circuit, "window": 4}, "gate": None}
    assert merge_backend_runtime(own, []) == own  # no heartbeat yet: the supervisor's own, idle state


def test_one_worker_is_the_plain_single_process_gateway(start: Callable[..., Workers]) -> None:
    gw = start(workers=1)
    assert gw.chat().status_code == 200
    assert httpx.get(gw.admin + "/admin/workers").status_code == 404
    children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    assert children == []


def test_a_supervisor_whose_workers_cannot_start_fails_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import asyncio

    from lm_gateway import workers
    from lm_gateway.config import load_config

    monkeypatch.setattr(workers, "WORKER_CODE", "import sys; sys.exit(3)")
    path = tmp_path / "config.toml"
    path.write_text(config_text(DEMO))
    supervisor = workers.Supervisor(load_config(path), None, 2, path)

    async def start() -> None:
        with pytest.raises(OSError, match=r"the workers did not start: worker \d exited \(exit code 3\)"):
            await supervisor.start()

    asyncio.run(start())
    assert not any(w.alive for w in supervisor.workers)  # the other one was stopped, if still starting
    codes = [w.proc.returncode for w in supervisor.workers if w.proc is not None]
    assert len(codes) == 2 and 3 in codes and None not in codes
