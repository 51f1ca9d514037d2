"""``python -m bench.workers``: lm-gateway's throughput with ``--workers 1`` and ``--workers 2``.

Why a runner of its own and not a target of ``python -m bench``: that harness pins the target to one
core and the load to the other, which is right for one process and makes two workers pointless. Here
nothing is pinned: the gateway (supervisor and workers), the mock upstream and this process (the
load generator) share both cores, for one worker as for two, so the two figures are measured under
the same conditions. The load side's own CPU is therefore taken from the workers (about a fifth of
a core at 15,000 req/s), which caps the ratio below 2.

The load generator and the mock upstream are native when installed (``--native auto``, the
default): ``wrk`` and ``nginx`` (``apt-get install -y wrk nginx``; see :mod:`bench.native`) spend less
CPU per request than the Python ones (:mod:`bench.loadgen`, :mod:`bench.mock_upstream`), which
``--native no`` keeps. The table and the JSON name the tools used, the CPU each side used, the share
of the cores the gateway got and its req/s per core of its own CPU time. A measurement with any error
(non-2xx answer, socket error, timeout) is failed: it is printed, and kept only if every round failed.

Both gateways run from the start (an idle one costs nothing); each round measures every concurrency
on one, then the other, back to back; with ``--rounds N`` each figure keeps its least disturbed
round (disturbance: the share of the machine's two cores used by processes other than ours during
the measurement, from /proc). Results: a table on stdout, ``bench/results/workers.json``.

    python -m bench.workers                       # c=16 and c=64, 3 rounds of 5 s: ~1.5 min
    python -m bench.workers --quick               # 1 round of 2 s
    python -m bench.workers --native no           # the Python load generator and mock
    python -m bench.workers -c 16 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import native, procs
from bench.loadgen import LoadSpec, chat_body, run_load
from bench.procs import ProcessGroup
from bench.targets import LaunchContext, gateway_launcher

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 1.6  # the target for 2 workers over 1 at c=16 on a 2-core machine


@dataclass
class Gateway:
    workers: int
    port: int
    pid: int


@dataclass
class Setup:
    """What this run measures with: wrk and nginx (``tools``), or the Python ones (``tools=None``)."""

    group: ProcessGroup
    tools: native.Tools | None
    wrk_threads: int
    workdir: Path
    upstream_pid: int = 0

    def describe(self) -> dict[str, str]:
        if self.tools is None:
            return {"load": "python bench.loadgen", "upstream": "python bench.mock_upstream"}
        v = native.versions(self.tools)
        return {"load": f"wrk {v['wrk']} -t{self.wrk_threads}", "upstream": f"nginx {v['nginx']}, 1 worker"}


def start_upstream(setup: Setup) -> int:
    """The mock upstream (nginx or the Python mock): its port."""
    if setup.tools is not None:
        port, setup.upstream_pid = native.start_nginx(setup.group, setup.tools, setup.workdir)
    else:
        port = procs.free_ports(1)[0]
        argv = [sys.executable, "-m", "bench.mock_upstream", "--port", str(port)]
        setup.upstream_pid = setup.group.spawn("workers-mock", argv).pid
    wait_http(port, "/healthz", 15)
    return port


def start_gateway(group: ProcessGroup, workers: int, upstream_port: int) -> Gateway:
    port, admin_port = procs.free_ports(2)
    command = "{python} -m lm_gateway serve --config {config} --workers " + str(workers)
    ctx = LaunchContext(
        f"workers-{workers}", f"http://127.0.0.1:{upstream_port}", port, admin_port, group.log_dir
    )
    launch = gateway_launcher(command)(ctx)
    proc = group.spawn(f"workers-{workers}", launch.argv, env=launch.env)
    wait_http(port, "/healthz", 30)
    wait_http(admin_port, "/admin/health", 30)  # the supervisor opens it once every worker serves
    check_completion(port)
    return Gateway(workers, port, proc.pid)


def check_completion(port: int) -> None:
    """One chat completion through the gateway: a 200 with the mock's answer, or the run stops."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=chat_body("hint:fast"),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            answer = json.loads(resp.read())
        if answer["choices"][0]["message"]["content"] != "Hello from the mock upstream.":
            raise ValueError(f"unexpected answer {answer}")
    except (OSError, ValueError, LookupError, TypeError) as exc:
        raise SystemExit(f"the gateway on port {port} did not relay the mock's completion: {exc}") from exc


def wait_http(port: int, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing answered on port {port} in {timeout_s:.0f} s")


async def measure(
    setup: Setup, gateway: Gateway, concurrency: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """One closed-loop load, with the CPU used by the gateway, by the load generator, by the mock
    upstream, and by everyone else on the machine meanwhile."""
    body = chat_body("hint:fast")
    tools = setup.tools

    def wrk(tools: native.Tools, seconds: float) -> dict[str, Any]:
        return native.run_wrk(
            setup.group,
            tools,
            gateway.port,
            body,
            concurrency=concurrency,
            duration_s=seconds,
            threads=setup.wrk_threads,
        )

    if tools is not None and warmup_s > 0:  # wrk has no warm-up phase: a run of its own, not measured
        wrk(tools, warmup_s)
    cores = sorted(os.sched_getaffinity(0))
    gateway_pids = procs.tree_pids(gateway.pid)
    upstream_pids = procs.tree_pids(setup.upstream_pid)
    # Ours besides those: this process (the Python load generator, or waiting for wrk), the idle gateway.
    rest_pids = [p for p in procs.tree_pids(os.getpid()) if p not in gateway_pids and p not in upstream_pids]
    jiffies0 = procs.core_jiffies(cores)
    gateway0, upstream0 = procs.cpu_seconds(gateway_pids), procs.cpu_seconds(upstream_pids)
    self0, rest0 = procs.cpu_seconds([os.getpid()]), procs.cpu_seconds(rest_pids)
    t0 = time.perf_counter()
    wrk_cpu = 0.0
    if tools is not None:
        raw = wrk(tools, duration_s)
        result, wrk_cpu = native.wrk_figures(raw), raw["cpu_s"]
    else:
        spec = LoadSpec(
            gateway.port, body=body, concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s
        )
        result = await run_load(spec)
    wall = time.perf_counter() - t0
    jiffies1 = procs.core_jiffies(cores)
    gateway_cpu = (procs.cpu_seconds(gateway_pids) - gateway0) / wall
    upstream_cpu = (procs.cpu_seconds(upstream_pids) - upstream0) / wall
    loadgen_cpu = (procs.cpu_seconds([os.getpid()]) - self0 + wrk_cpu) / wall
    load_cpu = (procs.cpu_seconds(rest_pids) - rest0 + wrk_cpu) / wall + upstream_cpu
    busy = sum(procs.busy_share(jiffies0, jiffies1, core) for core in cores)
    return {
        "rps": result["rps"],
        "errors": result["errors"],
        "error_kinds": result["error_kinds"],
        "latency_ms": result["latency_ms"],
        "gateway_cpu_cores": round(gateway_cpu, 2),
        "gateway_share": round(gateway_cpu / len(cores), 3),  # of all the cores of the machine
        "rps_per_gateway_core": round(result["rps"] / gateway_cpu) if gateway_cpu else 0,
        "load_cpu_cores": round(load_cpu, 2),  # all ours but the gateway: the two below and the idle one
        "loadgen_cpu_cores": round(loadgen_cpu, 2),
        "upstream_cpu_cores": round(upstream_cpu, 2),
        "disturbance": round(max(0.0, busy - gateway_cpu - load_cpu) / len(cores), 3),
    }


def least_disturbed(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round least disturbed by other processes, among those without errors if there are any."""
    clean = [r for r in rounds if not r["errors"]] or rounds
    return min(clean, key=lambda r: r["disturbance"])


def report(results: dict[str, dict[str, Any]], concurrencies: list[int], tools: dict[str, str]) -> str:
    ncores = len(os.sched_getaffinity(0))
    lines = [
        f"load generator: {tools['load']}; mock upstream: {tools['upstream']}",
        f"{'':30}{'1 worker':>12}{'2 workers':>12}{'ratio':>9}",
    ]

    def row(title: str, one: str, two: str) -> None:
        lines.append(f"{title:30}{one:>12}{two:>12}")

    failed = False
    for c in concurrencies:
        one, two = results[f"c{c}"]["1"], results[f"c{c}"]["2"]
        ratio = two["rps"] / one["rps"] if one["rps"] else 0.0
        results[f"c{c}"]["ratio"] = round(ratio, 2)
        lines.append(f"{f'non-stream c={c}: req/s':30}{one['rps']:>12,.0f}{two['rps']:>12,.0f}{ratio:>8.2f}x")
        row("  gateway CPU (cores)", f"{one['gateway_cpu_cores']:.2f}", f"{two['gateway_cpu_cores']:.2f}")
        row(
            f"  gateway share of {ncores} cores", f"{one['gateway_share']:.0%}", f"{two['gateway_share']:.0%}"
        )
        row(
            "  req/s per gateway core", f"{one['rps_per_gateway_core']:,}", f"{two['rps_per_gateway_core']:,}"
        )
        row(
            "  load generator CPU (cores)",
            f"{one['loadgen_cpu_cores']:.2f}",
            f"{two['loadgen_cpu_cores']:.2f}",
        )
        row(
            "  mock upstream CPU (cores)",
            f"{one['upstream_cpu_cores']:.2f}",
            f"{two['upstream_cpu_cores']:.2f}",
        )
        row("  disturbance", f"{one['disturbance']:.1%}", f"{two['disturbance']:.1%}")
        row("  p50 latency (ms)", f"{one['latency_ms']['p50']:.2f}", f"{two['latency_ms']['p50']:.2f}")
        if one["errors"] or two["errors"]:
            failed = True
            row("  ERRORS (failed)", f"{one['errors']:,}", f"{two['errors']:,}")
    if failed:
        lines.append("FAILED: some figures had errors (non-2xx, socket errors or timeouts): see above")
    if 16 in concurrencies:
        ratio = results["c16"]["ratio"]
        verdict = "INVALID (errors)" if failed else "ok" if ratio >= TARGET_RATIO else "MISSED"
        lines.append(f"target: 2 workers >= {TARGET_RATIO}x 1 worker at c=16: {ratio:.2f}x {verdict}")
    return "\n".join(lines)


async def run(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    group = setup.group
    try:
        upstream = start_upstream(setup)
        gateways = [start_gateway(group, workers, upstream) for workers in (1, 2)]
        rounds: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for index in range(args.rounds):
            for c in args.concurrency:
                for gateway in gateways:
                    figures = await measure(setup, gateway, c, args.duration, args.warmup)
                    rounds.setdefault((c, gateway.workers), []).append(figures)
                    print(
                        f"round {index + 1} c={c} workers={gateway.workers}: {figures['rps']:,.0f} req/s "
                        f"(disturbance {figures['disturbance']:.0%})",
                        file=sys.stderr,
                    )
                    if figures["errors"]:
                        print(
                            f"  FAILED: {figures['errors']:,} errors: {figures['error_kinds']}",
                            file=sys.stderr,
                        )
    finally:
        group.stop_all()
    return {
        f"c{c}": {str(w): {**least_disturbed(rounds[(c, w)]), "rounds": rounds[(c, w)]} for w in (1, 2)}
        for c in args.concurrency
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--concurrency", default="16,64", help="comma-separated connection counts")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds (whole seconds with wrk)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds (whole seconds with wrk)")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s")
    ap.add_argument(
        "--native",
        choices=("auto", "yes", "no"),
        default="auto",
        help="wrk and nginx as load generator and mock upstream (auto: if both are installed)",
    )
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk's threads (1 costs the least CPU)")
    ap.add_argument("--json", type=Path, default=RESULTS / "workers.json")
    args = ap.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 0.5
    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 usable cores; 2 workers cannot run faster than 1", file=sys.stderr)
    tools = native.find_tools() if args.native != "no" else None
    if args.native == "yes" and tools is None:
        raise SystemExit("--native yes: wrk and nginx are needed (apt-get install -y wrk nginx)")
    import uvloop

    with tempfile.TemporaryDirectory(prefix="lmg-bench-workers-") as workdir:
        setup = Setup(ProcessGroup(RESULTS / "logs"), tools, args.wrk_threads, Path(workdir))
        described = setup.describe()
        print(f"load generator: {described['load']}; mock upstream: {described['upstream']}", file=sys.stderr)
        results = uvloop.run(run(setup, args))
    table = report(results, args.concurrency, described)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "cores": len(os.sched_getaffinity(0)),
        "rounds": args.rounds,
        "duration_s": args.duration,
        "tools": described,
    }
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"results: {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
