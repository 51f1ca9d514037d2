"""Where the gateway's time goes: py-spy on lm-gateway under one benchmark scenario's load.

``python -m bench.profile [--scenario c16] [--seconds 8]`` starts the mock upstream and lm-gateway
as ``python -m bench`` does (the gateway alone on the first core; the mock, the load generator and
py-spy on the second), runs the scenario's closed-loop load, records the gateway with
``py-spy record --function -f raw`` for ``--seconds`` after a warm-up, and prints:

- **self time**: the frames the samples were *in* (the leaf of each stack), as a share of all
  samples. Time in C code (uvloop's loop and socket calls, httptools, orjson) has no Python frame of
  its own and is counted to the Python function that called it; what uvloop does between callbacks
  (epoll, reading and writing sockets, running handles) lands on the outermost frame, shown as
  ``run (asyncio/runners.py)``;
- **inclusive time**: the frames anywhere in the stack (each counted once per sample): the share of
  the time spent in a function and everything it called;
- **self time by file**, to see which layer costs what.

py-spy drops samples of an idle thread (waiting in ``epoll_wait``), and without pausing the process
it also drops the samples it cannot read consistently (~25 % at 100 % CPU here), so the shares are
shares of the samples taken. Pool threads waiting for work are not counted (see :func:`parse_raw`).
Frame shares move by a few points from run to run; use ``--seconds 20`` or more for figures to quote.

py-spy samples with ``--nonblocking``: it reads the gateway's memory while it runs. Its default,
pausing the process for every sample, costs ~35 % of the gateway's throughput here and skews the
profile: a stop lands preferably while the process is in a system call, so the frames that write to
sockets (``HttpProtocol._send``, ``_Conn.send``) came out at 2–3× their share. ``--blocking`` gives
that mode back.

Options: ``--scenario`` (any closed-loop scenario of ``bench/scenarios.py``: ``c16``, ``stream16``,
``stream16_o2a``, …), ``--seconds``, ``--rate`` (samples/s, default 200), ``--top N``,
``--src DIR`` (profile another tree's ``src/``, e.g. an old commit unpacked with
``git archive <commit> src | tar -x -C /tmp/old``), ``--minimal-config`` (only the OpenAI mock
backend, for trees older than the Anthropic provider), ``--blocking``, ``--no-pin``. The raw stacks
are kept in ``bench/results/profile-<scenario>.raw`` (``flamegraph.pl`` reads them) and the tables
in ``profile-<scenario>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench import procs
from bench.loadgen import chat_body, fetch_once
from bench.procs import Proc, ProcessGroup
from bench.scenarios import SCENARIOS, ScenarioRun
from bench.targets import GATEWAY_CONFIG, LaunchContext, gateway_launcher

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MINIMAL_CONFIG = GATEWAY_CONFIG.split("# The same mock, spoken to")[0] + (
    '[[tiers]]\nname = "local:fast"\nbackend = "mock"\nmodel = "mock-model"\n\n'
    '[aliases]\n"hint:fast" = "local:fast"\n\n'
    '[profiles.default]\nmode = "dispatch"\nclassifier = "local:fast"\n'
)


# Frames under which everything runs (their inclusive share is ~100 %, or arbitrary: a coroutine
# resumed by the loop has its outermost coroutine as the root of its stack): not listed.
_START_UP = frozenset({"<frozen runpy>", "asyncio/runners.py", "lm_gateway/__main__.py"})
_WAITING_FOR_WORK = "_worker (concurrent/futures/thread.py:"


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int
    self_time: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]
    by_file: list[tuple[str, int]]
    threads: list[tuple[str, int]]


def parse_raw(text: str) -> Profile:
    """Aggregate py-spy's raw (collapsed) stacks, ``[thread;]frame;frame;…;leaf count`` per line.

    A thread pool worker waiting for work (leaf ``_worker``: blocked in ``queue.get``) is left out:
    under load py-spy counts such a sleeping thread as active on this machine (its CPU time in
    ``/proc`` stays at zero), which added a third of phantom samples. A worker running something
    has that something as its leaf, and counts."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        thread = "MainThread"
        if frames and frames[0].startswith("thread ("):
            thread = frames[0].split(": ", 1)[-1]
            frames = frames[1:]
        if not frames or frames[-1].startswith(_WAITING_FOR_WORK):
            continue  # see the docstring
        threads[thread if thread == "MainThread" else "other threads"] += count
        total += count
        leaf = frames[-1]
        self_time[leaf] += count
        by_file[_file_of(leaf)] += count
        for frame in set(frames):
            if _file_of(frame) not in _START_UP:
                inclusive[frame] += count
    return Profile(
        total, self_time.most_common(), inclusive.most_common(), by_file.most_common(), threads.most_common()
    )


def _file_of(frame: str) -> str:
    """``func (path/file.py:12)`` -> ``path/file.py``."""
    if frame.endswith(")") and " (" in frame:
        return frame[frame.rindex(" (") + 2 : -1].rsplit(":", 1)[0]
    return frame


def render(p: Profile, top: int, window_s: float, rate: int) -> str:
    def table(title: str, rows: list[tuple[str, int]]) -> list[str]:
        out = [title]
        for frame, n in rows[:top]:
            out.append(f"  {n / max(p.samples, 1):6.1%}  {frame}")
        return out

    expected = window_s * rate
    shares = ", ".join(f"{name} {n / max(p.samples, 1):.0%}" for name, n in p.threads)
    lines = [f"{p.samples} samples of {expected:.0f} expected ({shares}; the rest idle or unreadable)"]
    lines += table("self time (leaf frames):", p.self_time)
    lines += table("inclusive time (anywhere in the stack):", p.inclusive)
    lines += table("self time by file:", p.by_file)
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Options:
    scenario: str
    seconds: float
    warmup_s: float
    rate: int
    top: int
    src: Path | None
    minimal_config: bool
    pin: bool
    blocking: bool
    idle: bool


def _py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy not found (pip install py-spy)")
    return found


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


async def profile(opts: Options, group: ProcessGroup) -> dict[str, Any]:
    sc = SCENARIOS[opts.scenario]
    cpus = sorted(os.sched_getaffinity(0))
    target_cores, load_cores = ([cpus[0]], [cpus[1]]) if opts.pin and len(cpus) >= 2 else (None, None)
    if load_cores:
        procs.pin_self(load_cores)  # py-spy, started from here, runs on the load core too
    mock_port, port, admin_port = procs.free_ports(3)
    mock = group.spawn(
        "profile-mock",
        [sys.executable, "-m", "bench.mock_upstream", "--port", str(mock_port)],
        load_cores,
        {"PYTHONPATH": str(procs.REPO_ROOT)},
    )
    await _until_served(mock, mock_port, 10.0)
    template = group.log_dir / "profile-gateway.template.toml"
    template.write_text(MINIMAL_CONFIG if opts.minimal_config else GATEWAY_CONFIG)
    launch = gateway_launcher(config_template=template)(
        LaunchContext("profile-gateway", f"http://127.0.0.1:{mock_port}", port, admin_port, group.log_dir)
    )
    env = dict(launch.env)
    if opts.src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(opts.src.resolve()), str(procs.REPO_ROOT)])
    gateway = group.spawn("profile-gateway", launch.argv, target_cores, env)
    await _until_served(gateway, port, 15.0)
    raw_path = RESULTS_DIR / f"profile-{opts.scenario}.raw"
    argv = [_py_spy(), "record", "-p", str(gateway.pid), "-d", str(round(opts.seconds)), "-r", str(opts.rate)]
    argv += ["--function", "--threads", "-f", "raw", "-o", str(raw_path)]
    if not opts.blocking:
        argv.append("--nonblocking")
    if opts.idle:
        argv.append("--idle")
    load_s = opts.warmup_s + opts.seconds + 1.0

    async def record() -> tuple[int, str]:
        await asyncio.sleep(opts.warmup_s)
        spy = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            out, _ = await asyncio.wait_for(spy.communicate(), opts.seconds + 20.0)
        finally:
            if spy.returncode is None:
                spy.kill()
                await spy.wait()
        return spy.returncode or 0, out.decode(errors="replace")

    cpu0 = procs.cpu_seconds(procs.tree_pids(gateway.pid))
    t0 = time.monotonic()
    load, (code, spy_out) = await asyncio.gather(
        sc.measure(ScenarioRun(sc, port, "hint:fast", load_s - opts.warmup_s, opts.warmup_s)), record()
    )
    cpu = (procs.cpu_seconds(procs.tree_pids(gateway.pid)) - cpu0) / (time.monotonic() - t0)
    if code != 0 or not raw_path.exists():
        raise SystemExit(f"py-spy failed ({code}): {spy_out.strip()[-400:]}")
    prof = parse_raw(raw_path.read_text())
    top = 40
    return {
        "scenario": opts.scenario,
        "src": str(opts.src or procs.REPO_ROOT / "src"),
        "rps": load.get("rps"),
        "errors": load.get("errors"),
        "gateway_cpu": round(cpu, 3),
        "seconds": opts.seconds,
        "rate": opts.rate,
        "samples": prof.samples,
        "self": [(f, round(n / max(prof.samples, 1), 4)) for f, n in prof.self_time[:top]],
        "inclusive": [(f, round(n / max(prof.samples, 1), 4)) for f, n in prof.inclusive[:top]],
        "by_file": [(f, round(n / max(prof.samples, 1), 4)) for f, n in prof.by_file[:top]],
        "threads": dict(prof.threads),
        "raw": str(raw_path),
        "text": render(prof, opts.top, opts.seconds, opts.rate),
    }


def parse_args(argv: list[str] | None) -> Options:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    runnable = [s.name for s in SCENARIOS.values() if s.run is None and s.runs_on("gateway")]
    ap.add_argument("--scenario", default="c16", choices=runnable)
    ap.add_argument("--seconds", type=float, default=10.0, help="recording length (default 10)")
    ap.add_argument("--warmup", type=float, default=1.5, help="load before recording starts, s")
    ap.add_argument("--rate", type=int, default=100, help="samples per second (default 100)")
    ap.add_argument("--top", type=int, default=20, help="rows per table (default 20)")
    ap.add_argument("--src", type=Path, help="profile this src/ directory instead of the working tree's")
    ap.add_argument("--minimal-config", action="store_true", help="only the OpenAI mock backend")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument(
        "--blocking", action="store_true", help="py-spy pauses the gateway for each sample (biased)"
    )
    ap.add_argument("--idle", action="store_true", help="keep the samples py-spy classes as idle")
    args = ap.parse_args(argv)
    if args.seconds < 1 or args.rate < 1:
        ap.error("--seconds must be >= 1 and --rate >= 1")
    return Options(
        args.scenario,
        args.seconds,
        args.warmup,
        args.rate,
        args.top,
        args.src,
        args.minimal_config,
        not args.no_pin,
        args.blocking,
        args.idle,
    )


async def _main(opts: Options, group: ProcessGroup) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await profile(opts, group)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    group = ProcessGroup(RESULTS_DIR / "logs")
    try:
        res = uvloop.run(_main(opts, group))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: children stopped", file=sys.stderr)
        return 130
    finally:
        group.stop_all()
    text = res.pop("text")
    (RESULTS_DIR / f"profile-{opts.scenario}.json").write_text(json.dumps(res, indent=2) + "\n")
    print(
        f"{opts.scenario}: {res['rps']:,.0f} req/s under py-spy ({res['errors']} errors), "
        f"gateway CPU {res['gateway_cpu']:.0%}, src {res['src']}"
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
