"""Native load and upstream for ``python -m bench.workers``: ``wrk`` as the load generator, ``nginx``
as the mock upstream.

Why: on a 2-core machine the Python load generator and mock need about half a core at 17,000 req/s,
taken from the gateway's workers. ``wrk`` (C, epoll, a static request built once) and ``nginx``
(one worker, ``return 200 '<body>'``) spend no CPU on an interpreter. They save less than one might
expect (measured on the project's 2-core VM: ~15 % less CPU per request, wrk ~14.5 and nginx ~15 µs
against ~16.5 and ~18 µs), since most of that cost is the kernel's: loopback TCP and about one
sleep and wake-up per request for each process at c=16. Their CPU is shown in the table either way.

nginx runs in the foreground (``daemon off``) as a child of the bench, with a config, pid file and
temp paths in a temporary directory and its error log in the run's log directory, so nothing is
written under /etc, /var or /run. It answers ``POST /v1/chat/completions`` with the exact
completion :mod:`bench.mock_upstream` sends, plus ``/healthz`` and ``/v1/models``.

wrk sends the request :mod:`bench.loadgen` sends (the same body and headers) on ``concurrency``
keep-alive connections; a Lua ``done()`` hook prints its counters as one JSON line, which is parsed
instead of its human-readable summary. wrk takes whole seconds only: durations are rounded.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs
from bench.mock_upstream import MockConfig, openai_completion
from bench.procs import ProcessGroup

_SBIN = "/usr/sbin:/sbin:/usr/local/sbin"  # nginx lives in sbin, not on every user's PATH
_WRK_MARK = "WRK_JSON "

NGINX_CONF = """\
# Written by bench/native.py for one run.
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
lock_file {tmp}/nginx.lock;
error_log {error_log} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/json;
    # The gateway keeps its upstream connections: never close them (nginx's default is after 1,000).
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = /v1/chat/completions {{
            limit_except POST {{ deny all; }}
            return 200 {completion};
        }}
        location = /healthz {{ return 200 '{{"status":"ok"}}'; }}
        location ~ /models$ {{ return 200 {models}; }}
        location / {{ return 404 '{{"error":{{"message":"not found"}}}}'; }}
    }}
}}
"""

WRK_SCRIPT = """\
-- Written by bench/native.py for one run: the request bench/loadgen.py sends.
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "lm-gateway-bench"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


@dataclass(frozen=True, slots=True)
class Tools:
    wrk: str
    nginx: str


def find_tools() -> Tools | None:
    """``wrk`` and ``nginx`` if both are installed."""
    wrk = shutil.which("wrk")
    nginx = shutil.which("nginx") or shutil.which("nginx", path=_SBIN)
    return Tools(wrk, nginx) if wrk and nginx else None


def versions(tools: Tools) -> dict[str, str]:
    """``{"wrk": "4.1.0-3+b2", "nginx": "1.22.1"}`` (what each prints about itself)."""
    wrk = subprocess.run([tools.wrk, "--version"], capture_output=True, text=True).stdout
    nginx = subprocess.run([tools.nginx, "-v"], capture_output=True, text=True).stderr
    wrk_v = re.search(r"wrk\s+(?:debian/)?(\S+)", wrk)
    nginx_v = re.search(r"nginx/(\S+)", nginx)
    return {"wrk": wrk_v.group(1) if wrk_v else "?", "nginx": nginx_v.group(1) if nginx_v else "?"}


def _nginx_string(text: str) -> str:
    """``text`` as a single-quoted nginx string (``return`` would expand ``$``: refuse it)."""
    if "$" in text:
        raise ValueError(f"nginx would expand '$' in {text!r}")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _lua_string(text: str) -> str:
    """``text`` as a Lua long string, with a level of ``=`` that does not occur in it."""
    level = "="
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def start_nginx(group: ProcessGroup, tools: Tools, workdir: Path) -> tuple[int, int]:
    """Start nginx as a child of ``group``, its config, pid and temp files in ``workdir`` (which
    must outlive it): (port, pid of its master process)."""
    cfg = MockConfig()
    completion = openai_completion(cfg.model, "Hello from the mock upstream.").decode()
    models = {"object": "list", "data": [{"id": cfg.model, "object": "model", "owned_by": "mock"}]}
    port = procs.free_ports(1)[0]
    error_log = group.log_dir / "workers-nginx.error.log"
    conf = workdir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            tmp=workdir,
            error_log=error_log,
            port=port,
            completion=_nginx_string(completion),
            models=_nginx_string(json.dumps(models, separators=(",", ":"))),
        )
    )
    argv = [tools.nginx, "-p", str(workdir), "-c", str(conf), "-e", str(error_log)]
    proc = group.spawn("workers-nginx", argv)
    time.sleep(0.1)
    if not proc.alive():
        log = error_log.read_text(errors="replace") if error_log.exists() else ""
        raise SystemExit(f"nginx did not start:\n{proc.log_tail()}\n{log}")
    return port, proc.pid


def run_wrk(
    group: ProcessGroup,
    tools: Tools,
    port: int,
    body: bytes,
    *,
    concurrency: int,
    duration_s: float,
    threads: int = 1,
) -> dict[str, Any]:
    """One closed-loop load with wrk: its counters, and the CPU seconds it used (``cpu_s``).

    Blocks until wrk exits (this process has nothing else to do meanwhile). wrk's CPU is read
    from this process's reaped children's rusage, since /proc forgets an exited process."""
    script = group.log_dir / "workers-wrk.lua"
    script.write_text(WRK_SCRIPT.format(body=_lua_string(body.decode()), mark=_WRK_MARK))
    seconds = max(1, round(duration_s))
    argv = [
        tools.wrk,
        f"-t{min(threads, concurrency)}",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/v1/chat/completions",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = group.spawn("workers-wrk", argv)
    try:
        proc.popen.wait(seconds + 30)
    finally:
        group.stop(proc)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = proc.log_path.read_text(errors="replace")
    lines = [line for line in output.splitlines() if line.startswith(_WRK_MARK)]
    if proc.popen.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed (exit {proc.popen.returncode}):\n{output.strip()}")
    raw = json.loads(lines[-1][len(_WRK_MARK) :])
    return {**raw, "cpu_s": cpu_s}


def wrk_figures(raw: dict[str, Any]) -> dict[str, Any]:
    """wrk's counters in :func:`bench.loadgen.run_load`'s terms (rps, errors, latency in ms)."""
    names = {"connect": "socket connect", "read": "socket read", "write": "socket write"}
    names |= {"timeout": "timeout", "status": "http >= 400"}  # wrk's "Non-2xx or 3xx": status > 399
    kinds = {name: raw[key] for key, name in names.items() if raw[key]}
    duration = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["status"]  # wrk counts the answers with an error status as requests
    return {
        "rps": round(ok / duration, 1) if duration else 0.0,
        "requests": ok,
        "duration_s": round(duration, 3),
        "errors": sum(kinds.values()),
        "error_kinds": kinds,
        "latency_ms": {
            "p50": raw["p50_us"] / 1000.0,
            "p90": raw["p90_us"] / 1000.0,
            "p99": raw["p99_us"] / 1000.0,
            "max": raw["max_us"] / 1000.0,
            "mean": round(raw["mean_us"] / 1000.0, 4),
        },
    }
