"""Child processes of the benchmark: spawn, pin to a core, measure from /proc, always clean up.

Why a registry: a benchmark that leaves a proxy running on a port poisons the next run (and other
people's tests on the same machine). Every child is started in its own session (so a terminal's
Ctrl-C reaches only the harness, which then stops them in order) and is stopped by its process
group id on exit, error, Ctrl-C or SIGTERM, with an ``atexit`` safety net.

Memory and CPU are read from ``/proc`` (no psutil): RSS is ``VmRSS``, the peak is ``VmHWM``, reset
after start by writing ``5`` to ``/proc/PID/clear_refs`` so that "loaded RSS" is the peak under load
rather than a start-up spike. Figures are summed over the process tree (multi-worker targets).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: the kernel SIGTERMs it if the harness dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that are free right now (all bound at once, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Proc:
    """One spawned child."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    spawned_at: float  # time.perf_counter() just before the spawn

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class ProcessGroup:
    """Owns every child of the run and stops them all, whatever happens."""

    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop_all)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        cores: Iterable[int] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        """Start ``argv`` with output to ``<log_dir>/<name>.log``, pinned to ``cores`` if given."""
        log_path = self.log_dir / f"{name}.log"
        child_env = dict(os.environ)
        child_env["PYTHONUNBUFFERED"] = "1"
        if env:
            child_env.update(env)
        with open(log_path, "wb") as log:
            spawned_at = time.perf_counter()
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=child_env,
                start_new_session=True,
                # A pre-exec hook is only safe in a single-threaded parent; it always is here
                # (checked, not assumed), and the hook only calls prctl.
                preexec_fn=_die_with_parent if len(os.listdir("/proc/self/task")) == 1 else None,
            )
        proc = Proc(name, popen, log_path, spawned_at)
        self.procs.append(proc)
        if cores is not None:
            # Pinned a few microseconds after exec; threads started later inherit the mask.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(popen.pid, set(cores))
        return proc

    def stop(self, proc: Proc, timeout_s: float = 3.0) -> None:
        self._signal(proc, signal.SIGTERM)
        try:
            proc.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._signal(proc, signal.SIGKILL)
            proc.popen.wait(timeout_s)
        # Workers or helpers left in the child's group (its session leader may have exited first).
        self._signal(proc, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self, timeout_s: float = 3.0) -> None:
        """SIGTERM every child at once, give them ``timeout_s`` together, then SIGKILL the rest."""
        procs, self.procs = self.procs, []
        for proc in procs:
            self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            self._signal(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(1.0)

    @staticmethod
    def _signal(proc: Proc, sig: int) -> None:
        # start_new_session=True: the child's pid is also its process group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


# -- /proc readers ----------------------------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _status_kb(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_mb(pids: Iterable[int]) -> float:
    """Current resident memory of the processes, MB (MiB)."""
    return sum(_status_kb(p, b"VmRSS:") for p in pids) / 1024.0


def peak_rss_mb(pids: Iterable[int]) -> float:
    """Peak resident memory (VmHWM) since start or the last :func:`reset_peak`, MB (MiB)."""
    return sum(_status_kb(p, b"VmHWM:") for p in pids) / 1024.0


def reset_peak(pids: Iterable[int]) -> bool:
    """Reset VmHWM to the current RSS; False if the kernel refused (then peaks are sampled)."""
    ok = True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time consumed so far by the processes (10 ms resolution)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _CLK_TCK


def pin_self(cores: Iterable[int]) -> None:
    os.sched_setaffinity(0, set(cores))


def core_jiffies(cores: Iterable[int]) -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies of each core since boot, from /proc/stat (busy includes steal)."""
    wanted = {f"cpu{c}".encode(): c for c in cores}
    out: dict[int, tuple[int, int]] = {}
    with open("/proc/stat", "rb") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in wanted:
                v = [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal
                busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                out[wanted[parts[0]]] = (busy, busy + v[3] + v[4])
    return out


def busy_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], core: int) -> float:
    """Fraction of ``core`` that was busy between two :func:`core_jiffies` readings."""
    b0, t0 = before.get(core, (0, 0))
    b1, t1 = after.get(core, (0, 0))
    return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
