"""``python -m bench``: run every scenario against direct-to-mock, the bare proxy and lm-gateway.

How the machine is split (as in ``reference/python-stacks.md``): the target under test alone on the
first core; the mock upstream(s) and this process, which is the load generator, on the second. The
load side is far faster than any Python proxy (tens of thousands of req/s), so the target's core is
the bottleneck, and each result records the CPU each side used to show it.

Order: start the mocks, then each target once per mock flavour it needs (measuring start to first
served request and idle RSS, one at a time on a quiet machine), then for each scenario run all the
targets back to back (warm-up, then the measured window), all of it N times with ``--rounds N``
(keeping each measurement's least disturbed round), and finally read the peak RSS.
Results go to ``bench/results/latest.json`` (plus a timestamped copy); children's logs and the
generated gateway configs to ``bench/results/logs/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import uvloop

from bench import procs, report
from bench.loadgen import chat_body, fetch_once
from bench.procs import REPO_ROOT, Proc, ProcessGroup
from bench.scenarios import SCENARIOS, UPSTREAMS, Scenario, ScenarioRun, Upstream
from bench.slow_streams import raise_fd_limit
from bench.targets import LaunchContext, Target, build_targets

RESULTS_DIR = Path(__file__).resolve().parent / "results"
IDLE_SETTLE_S = 0.3  # after the first served request, before reading idle RSS
RSS_SAMPLE_S = 0.2
FOREIGN_WARN = 0.05  # warn when other processes took more than this share of a core we use


class Unavailable(Exception):
    """A target could not be started or never answered 200; its column says why."""


@dataclass
class Instance:
    """One running process serving one target against one mock flavour."""

    target: str
    upstream: str
    port: int
    proc: Proc
    start_ms: float
    idle_rss_mb: float
    peak_reset: bool = False
    sampled_peak_mb: float = 0.0
    pids: list[int] = field(default_factory=list)

    def refresh_pids(self) -> list[int]:
        self.pids = procs.tree_pids(self.proc.pid) if self.proc.alive() else []
        return self.pids

    def loaded_rss_mb(self) -> float | None:
        if self.peak_reset and self.refresh_pids():
            return max(procs.peak_rss_mb(self.pids), self.sampled_peak_mb)
        return self.sampled_peak_mb or None

    def to_json(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "port": self.port,
            "pid": self.proc.pid,
            "start_ms": round(self.start_ms, 1),
            "idle_rss_mb": round(self.idle_rss_mb, 1),
            "loaded_rss_mb": _round(self.loaded_rss_mb(), 1),
            "log": str(self.proc.log_path.relative_to(REPO_ROOT)),
        }


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


@dataclass
class Options:
    duration_s: float
    warmup_s: float
    quick: bool
    rounds: int
    only: list[str]
    json_path: Path
    pin: bool
    start_timeout_s: float | None
    gateway_cmd: str | None
    gateway_config: Path | None


class Bench:
    """One run: owns the plan, the instances and the results."""

    def __init__(self, opts: Options, group: ProcessGroup) -> None:
        self.opts = opts
        self.group = group
        self.targets = build_targets(opts.gateway_cmd, opts.gateway_config)
        self.plan = self._plan()
        self.mocks: dict[str, Instance] = {}
        self.instances: dict[tuple[str, str], Instance] = {}
        cpus = sorted(os.sched_getaffinity(0))
        self.target_cores: list[int] | None = None
        self.load_cores: list[int] | None = None
        if opts.pin and len(cpus) >= 2:
            self.target_cores, self.load_cores = [cpus[0]], [cpus[1]]
        self.results: dict[str, Any] = {"meta": self._meta(cpus), "targets": {}}

    # -- plan ------------------------------------------------------------------------------------
    def _plan(self) -> dict[str, list[Scenario]]:
        """Which scenarios run on which target, from ``--only``."""
        names_t = [n for n in self.opts.only if n in self.targets]
        names_s = [n for n in self.opts.only if n in SCENARIOS]
        unknown = [n for n in self.opts.only if n not in self.targets and n not in SCENARIOS]
        if unknown:
            valid = ", ".join([*self.targets, *SCENARIOS])
            raise SystemExit(f"--only: unknown name(s) {', '.join(unknown)} (valid: {valid})")
        # Optional (long) scenarios run only when named.
        scenarios = [s for s in SCENARIOS.values() if s.name in names_s or (not names_s and not s.optional)]
        plan = {
            t: [s for s in scenarios if s.runs_on(t)] for t in self.targets if not names_t or t in names_t
        }
        # Direct is the floor of the "added" figures, and of the per-chunk costs of lm-gateway's.
        wants_floor = "gateway" in plan
        floors = [s for s in scenarios if (s.baseline or (s.floor and wants_floor)) and s.runs_on("direct")]
        if "direct" not in plan and floors:
            plan["direct"] = floors
        return {t: plan[t] for t in self.targets if plan.get(t)}  # registry order

    def _meta(self, cpus: list[int]) -> dict[str, Any]:
        versions = {}
        for pkg in ("aiohttp", "httptools", "orjson", "uvloop", "lm-gateway"):
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[pkg] = metadata.version(pkg)
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git": git.stdout.strip() or None,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_model": _cpu_model(),
            "cpus": cpus,
            "target_cores": self.target_cores,
            "load_cores": self.load_cores,
            "duration_s": self.opts.duration_s,
            "warmup_s": self.opts.warmup_s,
            "quick": self.opts.quick,
            "rounds": self.opts.rounds,
            "loadavg_at_start": _loadavg(),
            "only": self.opts.only,
            "versions": versions,
        }

    # -- the run ---------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        if self.load_cores:
            procs.pin_self(self.load_cores)
        else:
            _say("warning: not pinning (fewer than 2 cores or --no-pin): figures are not comparable")
        upstreams = {s.upstream for scs in self.plan.values() for s in scs}
        n = sum(len(scs) for scs in self.plan.values()) * self.opts.rounds
        per = self.opts.warmup_s + self.opts.duration_s
        _say(f"{n} measurements x ~{per:.1f} s, targets: {', '.join(self.plan)}")
        for name in UPSTREAMS:
            if name in upstreams:
                self.mocks[name] = await self._start_mock(UPSTREAMS[name])
        for tname in self.plan:
            await self._start_target(self.targets[tname])
        for inst in {id(i): i for i in [*self.mocks.values(), *self.instances.values()]}.values():
            inst.peak_reset = procs.reset_peak(inst.refresh_pids())
        rounds: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for rnd in range(self.opts.rounds):
            if self.opts.rounds > 1:
                _say(f"round {rnd + 1} of {self.opts.rounds}")
            for sc in SCENARIOS.values():
                for tname, scenarios in self.plan.items():
                    if sc in scenarios and self.results["targets"][tname]["available"]:
                        rounds.setdefault((tname, sc.name), []).append(
                            await self._measure(sc, self.targets[tname])
                        )
        for (tname, sname), runs in rounds.items():
            self.results["targets"][tname]["scenarios"][sname] = _pick_round(SCENARIOS[sname], runs)
        self._finish()
        return self.results

    async def _start_mock(self, upstream: Upstream) -> Instance:
        (port,) = procs.free_ports(1)
        argv = [sys.executable, "-m", "bench.mock_upstream", "--port", str(port), *upstream.args]
        proc = self.group.spawn(
            f"mock-{upstream.name}", argv, self.load_cores, {"PYTHONPATH": str(REPO_ROOT)}
        )
        try:
            inst = await self._until_served(proc, "direct", upstream.name, port, "hint:fast", 10.0)
        except Unavailable as exc:
            raise SystemExit(f"the mock upstream did not start: {exc}") from None
        _say(f"mock {upstream.name}: port {port}, ready in {inst.start_ms:.0f} ms, {inst.idle_rss_mb:.1f} MB")
        return inst

    async def _start_target(self, target: Target) -> None:
        entry: dict[str, Any] = {"title": target.title, "available": True, "scenarios": {}}
        self.results["targets"][target.name] = entry
        for upstream in dict.fromkeys(s.upstream for s in self.plan[target.name]):
            mock = self.mocks[upstream]
            if target.launch is None:
                self.instances[(target.name, upstream)] = mock
                continue
            port, admin_port = procs.free_ports(2)
            ctx = LaunchContext(
                instance=f"{target.name}-{upstream}",
                upstream_url=f"http://127.0.0.1:{mock.port}",
                port=port,
                admin_port=admin_port,
                workdir=self.group.log_dir,
            )
            timeout = self.opts.start_timeout_s or target.start_timeout_s
            try:
                launch = target.launch(ctx)
                proc = self.group.spawn(ctx.instance, launch.argv, self.target_cores, launch.env)
                inst = await self._until_served(proc, target.name, upstream, port, target.model, timeout)
            except (Unavailable, OSError, ValueError, KeyError) as exc:
                entry.update(available=False, reason=str(exc))
                _say(f"{target.title}: not available: {exc}")
                return
            self.instances[(target.name, upstream)] = inst
            _say(f"{target.title} ({upstream}): first served after {inst.start_ms:.0f} ms, ", end="")
            _say(f"{inst.idle_rss_mb:.1f} MB idle")

    async def _until_served(
        self, proc: Proc, target: str, upstream: str, port: int, model: str, timeout_s: float
    ) -> Instance:
        """Poll POST /v1/chat/completions until it answers 200; that moment is "first served"."""
        body = chat_body(model)
        last = "no answer"
        while True:
            if not proc.alive():
                self.group.stop(proc)
                tail = proc.log_tail(3).replace("\n", " | ")
                raise Unavailable(f"exited with code {proc.popen.returncode}: {tail} (log: {proc.log_path})")
            try:
                status, data = await fetch_once(port, body=body, timeout_s=2.0)
                if status == 200:
                    start_ms = (time.perf_counter() - proc.spawned_at) * 1000.0
                    break
                last = f"HTTP {status}: {data[:160].decode(errors='replace')}"
            except (OSError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.perf_counter() - proc.spawned_at > timeout_s:
                self.group.stop(proc)
                raise Unavailable(f"no 200 within {timeout_s:.0f} s; last: {last} (log: {proc.log_path})")
            await asyncio.sleep(0.002)
        await asyncio.sleep(IDLE_SETTLE_S)
        inst = Instance(target, upstream, port, proc, start_ms, 0.0)
        inst.idle_rss_mb = procs.rss_mb(inst.refresh_pids())
        return inst

    async def _measure(self, sc: Scenario, target: Target) -> dict[str, Any]:
        inst = self.instances[(target.name, sc.upstream)]
        mock = self.mocks[sc.upstream]
        if not inst.proc.alive():
            tail = inst.proc.log_tail(3).replace("\n", " | ")
            _say(f"[{sc.name}] {target.title}: process died ({tail})")
            return {"error": f"process died: {tail}"}
        pids = inst.refresh_pids()
        upstream_before = await _mock_count(mock.port)
        cores = [*(self.target_cores or ()), *(self.load_cores or ())]
        cpu_target, cpu_mock = procs.cpu_seconds(pids), procs.cpu_seconds([mock.proc.pid])
        cpu_self, jiffies = time.process_time(), procs.core_jiffies(cores)
        sampler = asyncio.create_task(_sample_rss(inst))
        t0 = time.perf_counter()
        try:
            res = await sc.measure(
                ScenarioRun(
                    sc,
                    inst.port,
                    target.model,
                    self.opts.duration_s * sc.duration_scale,
                    self.opts.warmup_s,
                    self.opts.quick,
                )
            )
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        wall = time.perf_counter() - t0
        jiffies_after = procs.core_jiffies(cores)
        cpu = {
            "target": (procs.cpu_seconds(pids) - cpu_target) / wall,
            "mock": (procs.cpu_seconds([mock.proc.pid]) - cpu_mock) / wall,
            "loadgen": (time.process_time() - cpu_self) / wall,
        }
        res.pop("loadgen_cpu", None)
        if self.target_cores and self.load_cores:
            # What processes other than ours took from each core (other people's tests, steal).
            # A spawned target runs on the target core; the mock and this process on the load core
            # (for direct, the "target" is the mock itself and the target core is not used).
            t_busy = procs.busy_share(jiffies, jiffies_after, self.target_cores[0])
            l_busy = procs.busy_share(jiffies, jiffies_after, self.load_cores[0])
            on_target = cpu["target"] if target.launch is not None else 0.0
            cpu["foreign_on_target_core"] = max(0.0, t_busy - on_target)
            cpu["foreign_on_load_core"] = max(0.0, l_busy - cpu["mock"] - cpu["loadgen"])
            relevant = [cpu["foreign_on_load_core"]]
            if target.launch is not None:
                relevant.append(cpu["foreign_on_target_core"])
            res["disturbance"] = round(max(relevant), 3)
            if max(relevant) > FOREIGN_WARN:
                res.setdefault("warnings", []).append(
                    f"other processes used {cpu['foreign_on_target_core']:.0%} of the target core and "
                    f"{cpu['foreign_on_load_core']:.0%} of the load core: figures are disturbed"
                )
        res["cpu"] = {k: round(v, 3) for k, v in cpu.items()}
        upstream_after = await _mock_count(mock.port)
        if upstream_before is not None and upstream_after is not None:
            res["upstream_requests"] = upstream_after - upstream_before
            issued = res.get("issued")
            if issued and res["upstream_requests"] < 0.98 * issued:
                res.setdefault("warnings", []).append(
                    f"only {res['upstream_requests']} of {issued} requests reached the upstream"
                )
        _say(_progress(sc, target, res))
        return res

    def _finish(self) -> None:
        """Per-target figures from each target's main instance (the "fast" one if it has one)."""
        errors: dict[str, int] = {}
        for tname, entry in self.results["targets"].items():
            errors[tname] = sum(r.get("errors", 0) + ("error" in r) for r in entry["scenarios"].values())
            entry["errors"] = errors[tname]
            mine = {u: i for (t, u), i in self.instances.items() if t == tname}
            if not mine:
                continue
            main = mine.get("fast") or next(iter(mine.values()))
            entry["start_ms"] = round(main.start_ms, 1)
            entry["idle_rss_mb"] = round(main.idle_rss_mb, 1)
            entry["loaded_rss_mb"] = _round(main.loaded_rss_mb(), 1)
            entry["instances"] = {u: i.to_json() for u, i in mine.items()}
        self.results["upstreams"] = {u: i.to_json() for u, i in self.mocks.items()}
        scenarios = list(SCENARIOS.values())
        self.results["derived"] = report.derive(self.results, scenarios)
        self.results["checks"] = report.evaluate(self.results)


def _pick_round(sc: Scenario, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """With ``--rounds N``: keep the round that other processes disturbed least.

    Interference only ever slows a target down, so the least disturbed round is the best estimate
    (a median still picks a disturbed round when two of three are). Without pinning there is no
    disturbance figure, and the round with the median main figure (req/s, else TTFC) is kept.
    """
    if len(runs) == 1:
        return runs[0]

    def disturbance(r: dict[str, Any]) -> float:
        return float(r.get("disturbance", 0.0))

    def figure(r: dict[str, Any]) -> float:
        if "rps" in sc.show:
            return float(r.get("rps", 0.0))
        return -float((r.get("ttfc_ms") or r.get("latency_ms") or {}).get("p50") or 0.0)

    def least_disturbed_first(r: dict[str, Any]) -> tuple[float, float]:
        return round(disturbance(r), 2), -figure(r)

    if all("disturbance" in r for r in runs):
        best: dict[str, Any] = min(runs, key=least_disturbed_first)
        chosen = dict(best)
    else:
        chosen = dict(sorted(runs, key=figure)[len(runs) // 2])
    chosen["rounds"] = [
        {
            "rps": r.get("rps"),
            "p50_ms": (r.get("ttfc_ms" if sc.stream else "latency_ms") or {}).get("p50"),
            "disturbance": round(disturbance(r), 3),
        }
        for r in runs
    ]
    chosen["errors"] = sum(r.get("errors", 0) for r in runs)
    return chosen


async def _mock_count(port: int) -> int | None:
    """Completions the mock has answered so far (to check the target really forwarded them)."""
    try:
        status, body = await fetch_once(port, path="/mock/stats", method="GET", timeout_s=2.0)
        return int(json.loads(body)["requests"]) if status == 200 else None
    except (OSError, TimeoutError, ValueError, KeyError):
        return None


async def _sample_rss(inst: Instance) -> None:
    """Fallback peak RSS for kernels that refuse to reset VmHWM (cheap: one /proc read per pid)."""
    while True:
        inst.sampled_peak_mb = max(inst.sampled_peak_mb, procs.rss_mb(inst.pids))
        await asyncio.sleep(RSS_SAMPLE_S)


def _progress(sc: Scenario, target: Target, res: dict[str, Any]) -> str:
    lat = res.get("latency_ms", {})
    text = f"[{sc.name}] {target.title}: {res.get('rps', 0):,.0f} req/s"
    if lat:
        text += f", p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms"
    if "ttfc_ms" in res:
        text += f", TTFC p50 {res['ttfc_ms'].get('p50')} ms"
    if "added_chunk_delay_ms" in res:
        delay = res["added_chunk_delay_ms"]
        text += f", chunk delay p50 {delay.get('p50')} p99 {delay.get('p99')} max {delay.get('max')} ms"
        text += f", {res.get('stalls')} stalls, {res.get('chunks')}/{res.get('chunks_expected')} chunks"
    cpu = res.get("cpu", {})
    text += f", cpu: target {cpu.get('target', 0):.0%}, mock {cpu.get('mock', 0):.0%}"
    text += f", loadgen {cpu.get('loadgen', 0):.0%}"
    if res.get("errors"):
        text += f", {res['errors']} errors {res.get('error_kinds')}"
    for w in res.get("warnings", []):
        text += f"\n  warning: {w}"
    return text


def _loadavg() -> str | None:
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        return f.read().strip()
    return None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _say(text: str, end: str = "\n") -> None:
    """Progress goes to stderr; the table and summary to stdout."""
    print(text, file=sys.stderr, flush=True, end=end)


def parse_args(argv: list[str] | None) -> Options:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description="lm-gateway benchmark: direct vs bare aiohttp proxy vs lm-gateway"
    )
    ap.add_argument("--quick", action="store_true", help="short windows (~30 s in all) for a smoke check")
    ap.add_argument("--duration", type=float, help="measured window per measurement, s (default 5, quick 1)")
    ap.add_argument("--warmup", type=float, help="warm-up before each window, s (default 1, quick 0.4)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every measurement N times (interleaved), keep the least disturbed; for busy machines",
    )
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated targets and/or scenarios, e.g. 'bare,gateway' or 'c16,stream16' (see --list)",
    )
    ap.add_argument(
        "--list", action="store_true", help="list targets, scenarios and mock flavours, then exit"
    )
    ap.add_argument(
        "--json", type=Path, default=RESULTS_DIR / "latest.json", help="where to write the results"
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin the target and the load side to cores")
    ap.add_argument("--start-timeout", type=float, help="seconds a target has to answer its first 200")
    ap.add_argument(
        "--gateway-cmd",
        help="command starting lm-gateway; {python} {config} {port} are replaced "
        "(default: '{python} -m lm_gateway serve --config {config}')",
    )
    ap.add_argument(
        "--gateway-config",
        type=Path,
        help="TOML template for lm-gateway with $client_port, $admin_port, $upstream_url",
    )
    args = ap.parse_args(argv)
    if args.list:
        for t in build_targets().values():
            print(f"target    {t.name:<13} {t.title}")
        for s in SCENARIOS.values():
            notes = [f"upstream {s.upstream}", f"{s.api} client"]
            if s.targets is not None:
                notes.append("targets " + "+".join(s.targets))
            notes += [
                n for n, on in (("baseline", s.baseline), ("optional: --only " + s.name, s.optional)) if on
            ]
            print(f"scenario  {s.name:<13} {s.title} ({', '.join(notes)})")
        for u in UPSTREAMS.values():
            print(f"upstream  {u.name:<13} {u.title} {' '.join(u.args)}")
        print("module    bench.soak      soak: RSS over time, every answer checked (--minutes 10)")
        print("module    bench.profile   py-spy profile of the gateway under load (top frames)")
        raise SystemExit(0)
    duration = args.duration if args.duration is not None else (1.0 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.4 if args.quick else 1.0)
    if duration <= 0 or warmup < 0 or args.rounds < 1:
        ap.error("--duration must be > 0, --warmup >= 0 and --rounds >= 1")
    return Options(
        duration_s=duration,
        warmup_s=warmup,
        quick=args.quick,
        rounds=args.rounds,
        only=[n.strip() for n in args.only.split(",") if n.strip()],
        json_path=args.json,
        pin=not args.no_pin,
        start_timeout_s=args.start_timeout,
        gateway_cmd=args.gateway_cmd,
        gateway_config=args.gateway_config,
    )


async def _main(bench: Bench) -> dict[str, Any]:
    # SIGTERM behaves like Ctrl-C: cancel the run, so every finally (and the children) is cleaned up.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await bench.run()


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    raise_fd_limit()  # 512 slow streams: 1,000+ sockets here and in each child (inherited)
    group = ProcessGroup(RESULTS_DIR / "logs")
    started = time.perf_counter()
    try:
        bench = Bench(opts, group)
        results = uvloop.run(_main(bench))
    except (KeyboardInterrupt, asyncio.CancelledError):
        _say("interrupted: children stopped, no results written")
        return 130
    finally:
        group.stop_all()
    results["meta"]["wall_s"] = round(time.perf_counter() - started, 1)
    scenarios = list(SCENARIOS.values())
    opts.json_path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2)
    opts.json_path.write_text(text + "\n")
    if opts.json_path == RESULTS_DIR / "latest.json":  # keep history only in the default place
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        (RESULTS_DIR / f"run-{stamp}.json").write_text(text + "\n")
    print()
    print(report.table(results, scenarios))
    print()
    print(report.summary(results))
    print(f"\nresults: {opts.json_path}  (wall {results['meta']['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
