"""What Linux's /proc says about processes and the machine: threads, children, CPU time, RSS.

Everything here reads; nothing changes a process. Processes that exit while being read are
skipped, not errors: a process tree is a moving target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def threads(pid: int) -> list[int]:
    """The thread ids of `pid`; [] when it has exited."""
    try:
        return sorted(int(t) for t in os.listdir(PROC / str(pid) / "task"))
    except (FileNotFoundError, ProcessLookupError):
        return []


def children(pid: int) -> list[int]:
    """The direct children of `pid`, from every thread's `children` file."""
    out: set[int] = set()
    for tid in threads(pid):
        try:
            text = (PROC / str(pid) / "task" / str(tid) / "children").read_text()
        except OSError:
            continue
        out.update(int(c) for c in text.split())
    return sorted(out)


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if not (PROC / str(p)).exists():
            continue
        out.append(p)
        todo.extend(children(p))
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` (all its threads) and of its children it has
    reaped; 0.0 when it has exited."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0.0
    # The command name, field 2, may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of every process in the trees rooted at `pids` (each counted once)."""
    seen = {p for root in pids for p in tree(root)}
    return sum(cpu_seconds(p) for p in seen)


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid`; 0 when it has exited."""
    try:
        fields = (PROC / str(pid) / "statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * PAGE_BYTES


def tree_rss_bytes(pid: int) -> int:
    """Resident set size of `pid` and its descendants, summed."""
    return sum(rss_bytes(p) for p in tree(pid))


def thread_affinity(pid: int, tid: int) -> frozenset[int]:
    """The CPUs thread `tid` of `pid` may run on; empty when it has exited."""
    try:
        text = (PROC / str(pid) / "task" / str(tid) / "status").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return parse_cpu_list(line.split(":", 1)[1])
    return frozenset()


def parse_cpu_list(text: str) -> frozenset[int]:
    """ "0-2,5" -> {0, 1, 2, 5} (the kernel's cpulist format)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(cpus)


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative seconds the machine's CPUs spent, from /proc/stat."""

    busy: float
    """User, nice and system time over all CPUs (interrupt time excluded: it is not
    charged to processes, so it could not be told apart from one's own)."""
    steal: dict[int, float]
    """Per CPU: time the hypervisor ran something else while this guest wanted the CPU."""
    total: dict[int, float]
    """Per CPU: all time accounted."""


def machine_cpu_times(text: str | None = None) -> CpuTimes:
    """Parse /proc/stat (or `text`, for tests)."""
    if text is None:
        text = (PROC / "stat").read_text()
    busy = 0.0
    steal: dict[int, float] = {}
    total: dict[int, float] = {}
    for line in text.splitlines():
        name, *values = line.split()
        if not name.startswith("cpu"):
            continue
        ticks = [int(v) for v in values]
        if name == "cpu":
            busy = sum(ticks[0:3]) / CLOCK_TICKS
            continue
        cpu = int(name[3:])
        # Fields: user nice system idle iowait irq softirq steal guest guest_nice; guest
        # time is already inside user, so the first eight are the total.
        steal[cpu] = (ticks[7] if len(ticks) > 7 else 0) / CLOCK_TICKS
        total[cpu] = sum(ticks[0:8]) / CLOCK_TICKS
    return CpuTimes(busy=busy, steal=steal, total=total)
