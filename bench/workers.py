"""``python -m bench.workers``: lm-gateway's throughput with ``--workers 1`` and ``--workers 2``.

Why a runner of its own and not a target of ``python -m bench``: that harness pins the target to one
core and the load to the other, which is right for one process and makes two workers pointless. Here
nothing is pinned: the gateway (supervisor and workers), the mock upstream and this process (the
load generator) share both cores, for one worker as for two, so the two figures are measured under
the same conditions. The load side's own CPU is therefore taken from the workers (about a fifth of
a core at 15,000 req/s), which caps the ratio below 2.

Both gateways run from the start (an idle one costs nothing); each round measures every concurrency
on one, then the other, back to back; with ``--rounds N`` each figure keeps its least disturbed
round (disturbance: the share of the machine's two cores used by processes other than ours during
the measurement, from /proc). Results: a table on stdout, ``bench/results/workers.json``.

    python -m bench.workers                       # c=16 and c=64, 3 rounds of 5 s: ~1.5 min
    python -m bench.workers --quick               # 1 round of 2 s
    python -m bench.workers -c 16 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs
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


def start_mock(group: ProcessGroup) -> int:
    port = procs.free_ports(1)[0]
    group.spawn("workers-mock", [sys.executable, "-m", "bench.mock_upstream", "--port", str(port)])
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
    return Gateway(workers, port, proc.pid)


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


async def measure(gateway: Gateway, concurrency: int, duration_s: float, warmup_s: float) -> dict[str, Any]:
    """One closed-loop load, with the CPU used by the gateway, by us (load generator and mock) and
    by everyone else on the machine meanwhile."""
    cores = sorted(os.sched_getaffinity(0))
    gateway_pids = procs.tree_pids(gateway.pid)
    # Ours besides the gateway: this process (the load generator), the mock, the idle other gateway.
    load_pids = [p for p in procs.tree_pids(os.getpid()) if p not in gateway_pids]
    jiffies0 = procs.core_jiffies(cores)
    gateway0, load0 = procs.cpu_seconds(gateway_pids), procs.cpu_seconds(load_pids)
    t0 = time.perf_counter()
    body = chat_body("hint:fast")
    spec = LoadSpec(
        gateway.port, body=body, concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s
    )
    result = await run_load(spec)
    wall = time.perf_counter() - t0
    jiffies1 = procs.core_jiffies(cores)
    gateway_cpu = (procs.cpu_seconds(gateway_pids) - gateway0) / wall
    load_cpu = (procs.cpu_seconds(load_pids) - load0) / wall
    busy = sum(procs.busy_share(jiffies0, jiffies1, core) for core in cores)
    return {
        "rps": result["rps"],
        "errors": result["errors"],
        "latency_ms": result["latency_ms"],
        "gateway_cpu_cores": round(gateway_cpu, 2),
        "load_cpu_cores": round(load_cpu, 2),
        "disturbance": round(max(0.0, busy - gateway_cpu - load_cpu) / len(cores), 3),
    }


def least_disturbed(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return min(rounds, key=lambda r: r["disturbance"])


def report(results: dict[str, dict[str, Any]], concurrencies: list[int]) -> str:
    lines = [f"{'':28}{'1 worker':>12}{'2 workers':>12}{'ratio':>9}"]
    for c in concurrencies:
        one, two = results[f"c{c}"]["1"], results[f"c{c}"]["2"]
        ratio = two["rps"] / one["rps"] if one["rps"] else 0.0
        results[f"c{c}"]["ratio"] = round(ratio, 2)
        lines.append(f"{f'non-stream c={c}: req/s':28}{one['rps']:>12,.0f}{two['rps']:>12,.0f}{ratio:>8.2f}x")
        lines.append(
            f"{'  gateway CPU (cores)':28}{one['gateway_cpu_cores']:>12.2f}{two['gateway_cpu_cores']:>12.2f}"
        )
        lines.append(
            f"{'  load side CPU (cores)':28}{one['load_cpu_cores']:>12.2f}{two['load_cpu_cores']:>12.2f}"
        )
        per_core = [r["rps"] / r["gateway_cpu_cores"] if r["gateway_cpu_cores"] else 0.0 for r in (one, two)]
        lines.append(f"{'  req/s per gateway core':28}{per_core[0]:>12,.0f}{per_core[1]:>12,.0f}")
        lines.append(f"{'  disturbance':28}{one['disturbance']:>12.1%}{two['disturbance']:>12.1%}")
    if 16 in concurrencies:
        ratio = results["c16"]["ratio"]
        verdict = "ok" if ratio >= TARGET_RATIO else "MISSED"
        lines.append(f"target: 2 workers >= {TARGET_RATIO}x 1 worker at c=16: {ratio:.2f}x {verdict}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    group = ProcessGroup(RESULTS / "logs")
    try:
        upstream = start_mock(group)
        gateways = [start_gateway(group, workers, upstream) for workers in (1, 2)]
        rounds: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for index in range(args.rounds):
            for c in args.concurrency:
                for gateway in gateways:
                    figures = await measure(gateway, c, args.duration, args.warmup)
                    rounds.setdefault((c, gateway.workers), []).append(figures)
                    print(
                        f"round {index + 1} c={c} workers={gateway.workers}: {figures['rps']:,.0f} req/s "
                        f"(disturbance {figures['disturbance']:.0%})",
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
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s")
    ap.add_argument("--json", type=Path, default=RESULTS / "workers.json")
    args = ap.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 0.5
    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 usable cores; 2 workers cannot run faster than 1", file=sys.stderr)
    import uvloop

    results = uvloop.run(run(args))
    table = report(results, args.concurrency)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cores": len(os.sched_getaffinity(0)), "rounds": args.rounds, "duration_s": args.duration}
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"results: {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
