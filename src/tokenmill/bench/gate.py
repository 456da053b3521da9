"""The busy-machine gate: a run counts only if nothing else used the CPUs while it ran.

The 1-minute load average cannot tell: it includes the benchmark's own previous run and
lags by a minute. Instead a `LoadMeter` takes the machine's busy CPU time from /proc/stat
over a window and subtracts what the benchmark's own processes (the client and the peer
being measured) used; the rest is foreign work. On a virtual machine it also reads the
time the hypervisor stole from the CPUs in use. Before each run the gate probes until the
machine is quiet (or its patience runs out); a run during which foreign work appeared is
repeated; a run that never got a quiet machine is kept but marked busy, and the report
leaves it out of every figure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Generic, TypeVar

from tokenmill.bench import proc

T = TypeVar("T")


@dataclass(frozen=True)
class GateConfig:
    """When the machine counts as busy, and how long to wait for it to be quiet."""

    max_foreign_cores: float = 0.1
    """Foreign work allowed, in cores (0.1: a tenth of one core on average)."""
    max_steal: float = 0.05
    """Fraction of the used CPUs' time the hypervisor may steal."""
    probe_s: float = 2.0
    """Length of the quiet probe before each run."""
    poll_s: float = 15.0
    """Pause between probes while the machine is busy."""
    max_wait_s: float = 900.0
    """How long to wait for a quiet machine before running anyway (marked busy)."""
    retries: int = 2
    """How many times a run disturbed by foreign work is repeated."""

    def __post_init__(self) -> None:
        if self.max_foreign_cores < 0 or not 0 <= self.max_steal <= 1:
            raise ValueError("max_foreign_cores must be >= 0 and max_steal within [0, 1].")
        if self.probe_s <= 0 or self.poll_s < 0 or self.max_wait_s < 0 or self.retries < 0:
            raise ValueError("probe_s must be positive; poll_s, max_wait_s, retries >= 0.")


@dataclass(frozen=True)
class LoadSample:
    """Foreign load over one window."""

    seconds: float
    foreign_cores: float
    """Others' CPU time over the window divided by its length."""
    steal: float
    """Stolen fraction of the watched CPUs' time."""
    loadavg: float
    """The 1-minute load average at the end (for the record; it includes our own work)."""

    def is_busy(self, cfg: GateConfig) -> bool:
        """Whether this window breaks the gate's limits."""
        return self.foreign_cores > cfg.max_foreign_cores or self.steal > cfg.max_steal

    def describe(self) -> str:
        """ "foreign 0.02 cores, steal 0.0%, load 1.1"."""
        return (
            f"foreign {self.foreign_cores:.2f} cores, steal {100 * self.steal:.1f}%, "
            f"load {self.loadavg:.1f}"
        )

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


class LoadMeter:
    """Measures foreign load between `start()` and `stop()`.

    Ours is this process (its threads, and children it has reaped) plus the process trees
    rooted at the pids `own` returns: the peer being measured. Peers started but idle are
    deliberately not ours: one that burns CPU while another is measured is foreign load.
    """

    def __init__(self, own: Callable[[], list[int]], cpus: tuple[int, ...]) -> None:
        self._own = own
        self._cpus = cpus
        self._t0 = 0.0
        self._machine0: proc.CpuTimes | None = None
        self._ours0 = 0.0

    def start(self) -> None:
        """Take the opening snapshot."""
        self._t0 = time.monotonic()
        self._machine0 = proc.machine_cpu_times()
        self._ours0 = self._ours()

    def _ours(self) -> float:
        return proc.cpu_seconds(os.getpid()) + proc.tree_cpu_seconds(self._own())

    def stop(self) -> LoadSample:
        """Take the closing snapshot and return the window's foreign load."""
        assert self._machine0 is not None, "start() first"
        ours = self._ours() - self._ours0
        m1, m0 = proc.machine_cpu_times(), self._machine0
        seconds = max(time.monotonic() - self._t0, 1e-6)
        foreign = max(0.0, (m1.busy - m0.busy) - ours) / seconds
        total = sum(m1.total.get(c, 0.0) - m0.total.get(c, 0.0) for c in self._cpus)
        steal = sum(m1.steal.get(c, 0.0) - m0.steal.get(c, 0.0) for c in self._cpus)
        return LoadSample(seconds, foreign, steal / total if total > 0 else 0.0, os.getloadavg()[0])


@dataclass
class GatedRun(Generic[T]):
    """A run's result with the load around it."""

    result: T
    clean: bool
    """Started on a quiet machine and undisturbed while it ran."""
    attempts: int
    before: LoadSample
    """The last probe before the run that was kept."""
    during: LoadSample
    waited_s: float


class Gate:
    """Runs measurements only on a quiet machine. `meter(own, cpus)` makes a LoadMeter;
    `sleep` and `clock` are injectable for tests."""

    def __init__(
        self,
        cfg: GateConfig,
        meter: Callable[[Callable[[], list[int]], tuple[int, ...]], LoadMeter] = LoadMeter,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self._meter = meter
        self._sleep = sleep
        self._clock = clock

    def probe(self, own: Callable[[], list[int]], cpus: tuple[int, ...]) -> LoadSample:
        """Foreign load over one probe window while our processes sit idle."""
        m = self._meter(own, cpus)
        m.start()
        self._sleep(self.cfg.probe_s)
        return m.stop()

    def wait_quiet(
        self, own: Callable[[], list[int]], cpus: tuple[int, ...]
    ) -> tuple[bool, LoadSample, float]:
        """Probe until a window is quiet or max_wait_s has passed; returns (quiet, last
        probe, seconds waited)."""
        start = self._clock()
        while True:
            sample = self.probe(own, cpus)
            waited = self._clock() - start
            if not sample.is_busy(self.cfg):
                return True, sample, waited
            if waited >= self.cfg.max_wait_s:
                return False, sample, waited
            print(f"  machine busy ({sample.describe()}); waiting", flush=True)
            self._sleep(self.cfg.poll_s)

    def run(
        self, own: Callable[[], list[int]], cpus: tuple[int, ...], measure: Callable[[], T]
    ) -> GatedRun[T]:
        """Wait for a quiet machine, run `measure`, and repeat it (up to `retries` times)
        when foreign work disturbed it. The last attempt is returned; `clean` says whether
        it counts. A machine still busy after max_wait_s gets one run, marked busy: waiting
        again would only repeat the wait."""
        waited_total = 0.0
        attempt = 0
        while True:
            attempt += 1
            quiet, before, waited = self.wait_quiet(own, cpus)
            waited_total += waited
            meter = self._meter(own, cpus)
            meter.start()
            result = measure()
            during = meter.stop()
            clean = quiet and not during.is_busy(self.cfg)
            if clean or not quiet or attempt > self.cfg.retries:
                return GatedRun(result, clean, attempt, before, during, waited_total)
            print(f"  run disturbed ({during.describe()}); repeating", flush=True)
