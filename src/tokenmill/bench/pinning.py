"""Which cores each process of a comparison gets, and making it so.

Every peer gets the same compute threads on the same CPUs; the load generator gets a
physical core none of them touches (its SMT siblings included), so the client never
competes with the server it measures.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from tokenmill.bench import proc
from tokenmill.bench.cpu import CpuInfo

SINGLE = "single"
ALL = "all"
PLANS = (SINGLE, ALL)


class PinningError(RuntimeError):
    """The machine cannot host a fair comparison (too few cores), or a process escaped."""


@dataclass(frozen=True)
class CorePlan:
    """One configuration of a comparison: where the client and the peers run."""

    name: str
    """"single" (one core, one thread) or "all" (all cores but the client's)."""
    client_cpus: tuple[int, ...]
    peer_cpus: tuple[int, ...]
    threads: int
    """Compute threads every peer is given."""

    def __post_init__(self) -> None:
        if set(self.client_cpus) & set(self.peer_cpus):
            raise PinningError(f"plan {self.name}: client and peers share CPUs.")
        if not self.client_cpus or not self.peer_cpus or self.threads < 1:
            raise PinningError(f"plan {self.name}: needs client CPUs, peer CPUs and threads.")

    @property
    def title(self) -> str:
        """How the report names the configuration."""
        cpus = _cpu_list(self.peer_cpus)
        where = "1 core" if len(self.peer_cpus) == 1 else f"{len(self.peer_cpus)} CPUs"
        thread = "thread" if self.threads == 1 else "threads"
        return (
            f"{where} ({cpus}), {self.threads} {thread} per peer; "
            f"client on {_cpu_list(self.client_cpus)}"
        )

    def same_placement(self, other: CorePlan) -> bool:
        """Whether two plans put every process in the same place."""
        return (self.client_cpus, self.peer_cpus, self.threads) == (
            other.client_cpus,
            other.peer_cpus,
            other.threads,
        )

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {
            "name": self.name,
            "client_cpus": list(self.client_cpus),
            "peer_cpus": list(self.peer_cpus),
            "threads": self.threads,
        }

    @classmethod
    def from_dict(cls, d: dict) -> CorePlan:
        """The inverse of to_dict."""
        return cls(d["name"], tuple(d["client_cpus"]), tuple(d["peer_cpus"]), d["threads"])


def _cpu_list(cpus: tuple[int, ...]) -> str:
    return "CPU " + ",".join(str(c) for c in cpus)


def plan(cpu: CpuInfo, name: str) -> CorePlan:
    """The placement for plan `name` on `cpu`'s usable CPUs.

    The client takes the first usable CPU and, with SMT, its siblings (a sibling shares the
    core's execution units, so a peer there would compete with the client). "single" gives
    the peers the first CPU of the next physical core and one thread; "all" gives them
    every other usable CPU and one thread per CPU. Raises PinningError with fewer than two
    physical cores.
    """
    if name not in PLANS:
        raise ValueError(f"unknown plan {name!r}; choose from {PLANS}.")
    usable = tuple(sorted(cpu.cpus))
    if not usable:
        raise PinningError("no usable CPUs.")
    client = tuple(sorted(cpu.core_of(usable[0]) & set(usable)))
    rest = tuple(c for c in usable if c not in client)
    if not rest:
        raise PinningError(
            f"a fair comparison needs two physical cores (one for the load generator); "
            f"this process may use only {_cpu_list(usable)}."
        )
    if name == SINGLE:
        return CorePlan(SINGLE, client, (rest[0],), 1)
    return CorePlan(ALL, client, rest, len(rest))


def plans(cpu: CpuInfo, names: tuple[str, ...]) -> list[CorePlan]:
    """The plans asked for, in order, dropping one whose placement repeats an earlier one
    (on a 2-core machine "all but the client's" is the single core)."""
    out: list[CorePlan] = []
    for name in names:
        p = plan(cpu, name)
        if not any(p.same_placement(q) for q in out):
            out.append(p)
    return out


def pin(pid: int, cpus: tuple[int, ...]) -> int:
    """Restrict every thread of `pid` and of its descendants to `cpus` (threads created
    later inherit it from their creator). Returns how many threads were set."""
    count = 0
    for p in proc.tree(pid):
        for tid in proc.threads(p):
            try:
                os.sched_setaffinity(tid, cpus)
                count += 1
            except (ProcessLookupError, PermissionError):
                continue
    return count


def strays(pid: int, cpus: tuple[int, ...]) -> list[str]:
    """Threads of `pid`'s tree allowed outside `cpus`, as "tid: cpulist" lines."""
    allowed = set(cpus)
    out = []
    for p in proc.tree(pid):
        for tid in proc.threads(p):
            got = proc.thread_affinity(p, tid)
            if got and not got <= allowed:
                out.append(f"{p}/{tid}: {sorted(got)}")
    return out


def enforce(pid: int, cpus: tuple[int, ...]) -> list[str]:
    """Re-pin any stray thread of `pid`'s tree (a runtime may set its own affinity) and
    return the strays found, so the report can say so; raises PinningError if a thread
    still escapes afterwards."""
    found = strays(pid, cpus)
    if found:
        pin(pid, cpus)
        left = strays(pid, cpus)
        if left:
            raise PinningError(f"threads escape {_cpu_list(cpus)}: {', '.join(left)}")
    return found


def pinned_argv(argv: list[str], cpus: tuple[int, ...]) -> tuple[list[str], object]:
    """`argv` started on `cpus`: prefixed with `taskset -c` when it exists (so the recorded
    command reproduces the placement), else with a pre-exec hook; returns (argv, preexec_fn).
    """
    taskset = shutil.which("taskset")
    if taskset:
        return [taskset, "-c", ",".join(str(c) for c in cpus), *argv], None
    return list(argv), lambda: os.sched_setaffinity(0, cpus)
