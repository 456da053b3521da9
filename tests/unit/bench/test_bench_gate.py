"""The busy-machine gate, the foreign-load arithmetic, and the /proc readers under it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tokenmill.bench import gate as gate_mod
from tokenmill.bench import proc
from tokenmill.bench.gate import Gate, GateConfig, LoadMeter, LoadSample
from tokenmill.bench.spread import Spread

CFG = GateConfig(max_foreign_cores=0.1, max_steal=0.05, probe_s=2.0, poll_s=10.0,
                 max_wait_s=30.0, retries=2)  # fmt: skip


def busy(cores: float = 0.5) -> LoadSample:
    return LoadSample(2.0, cores, 0.0, 2.0)


QUIET = LoadSample(2.0, 0.02, 0.0, 1.0)


class ScriptedMeter:
    """Returns the next scripted sample at each stop()."""

    def __init__(self, samples: list[LoadSample]) -> None:
        self.samples = samples

    def __call__(self, own, cpus):
        return self

    def start(self) -> None:
        pass

    def stop(self) -> LoadSample:
        return self.samples.pop(0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


def make_gate(samples: list[LoadSample], cfg: GateConfig = CFG) -> tuple[Gate, Clock]:
    clock = Clock()
    return Gate(cfg, ScriptedMeter(samples), clock.sleep, clock), clock


def test_busy_means_foreign_work_or_steal_over_the_limits():
    assert not QUIET.is_busy(CFG)
    assert busy(0.11).is_busy(CFG)
    assert LoadSample(2.0, 0.0, 0.06, 0.5).is_busy(CFG)


def test_the_gate_waits_until_a_probe_is_quiet():
    g, clock = make_gate([busy(), busy(), QUIET])
    quiet, sample, waited = g.wait_quiet(list, (0, 1))
    assert quiet and sample == QUIET
    assert clock.slept == [2.0, 10.0, 2.0, 10.0, 2.0]  # probe, pause, probe, pause, probe
    assert waited == 26.0


def test_a_machine_busy_past_the_wait_is_reported_busy():
    g, _ = make_gate([busy()] * 10)
    quiet, sample, waited = g.wait_quiet(list, (0, 1))
    assert not quiet and sample.foreign_cores == 0.5 and waited >= CFG.max_wait_s


def test_a_disturbed_run_is_repeated_and_the_clean_one_kept():
    calls = []
    # probe quiet, run disturbed; probe quiet, run clean
    g, _ = make_gate([QUIET, busy(0.3), QUIET, QUIET])
    run = g.run(list, (0, 1), lambda: calls.append(len(calls)) or len(calls))
    assert run.clean and run.attempts == 2 and run.result == 2 and calls == [0, 1]


def test_a_run_always_disturbed_stops_after_the_retries_and_does_not_count():
    g, _ = make_gate([QUIET, busy(), QUIET, busy(), QUIET, busy()])
    run = g.run(list, (0, 1), lambda: "figures")
    assert not run.clean and run.attempts == 3 and run.during.foreign_cores == 0.5


def test_a_run_on_a_machine_that_never_got_quiet_is_run_once_and_marked_busy():
    calls = []
    g, _ = make_gate([busy()] * 4 + [QUIET])  # 4 busy probes exhaust 30 s; the run is quiet
    run = g.run(list, (0, 1), lambda: calls.append(1))
    assert not run.clean and run.attempts == 1 and calls == [1]


def test_foreign_load_is_machine_busy_time_minus_ours(monkeypatch):
    times = iter([
        proc.CpuTimes(busy=100.0, steal={0: 1.0, 1: 1.0}, total={0: 50.0, 1: 50.0}),
        proc.CpuTimes(busy=103.0, steal={0: 1.0, 1: 1.2}, total={0: 52.0, 1: 52.0}),
    ])  # fmt: skip
    ours = iter([10.0, 12.8])
    clock = iter([0.0, 2.0])
    monkeypatch.setattr(proc, "machine_cpu_times", lambda: next(times))
    monkeypatch.setattr(LoadMeter, "_ours", lambda self: next(ours))
    monkeypatch.setattr(gate_mod.time, "monotonic", lambda: next(clock))
    meter = LoadMeter(list, (0, 1))
    meter.start()
    s = meter.stop()
    assert s.foreign_cores == pytest.approx(0.1)  # (3.0 - 2.8) cpu-s over 2 s
    assert s.steal == pytest.approx(0.2 / 4.0)


def test_proc_stat_parsing():
    text = (
        "cpu  400 0 100 1000 10 5 5 20 0 0\n"
        "cpu0 200 0 50 500 5 2 3 10 0 0\n"
        "cpu1 200 0 50 500 5 3 2 10 0 0\n"
        "intr 1 2 3\n"
    )
    t = proc.machine_cpu_times(text)
    assert t.busy == pytest.approx(500 / proc.CLOCK_TICKS)
    assert t.steal == {0: 10 / proc.CLOCK_TICKS, 1: 10 / proc.CLOCK_TICKS}
    assert t.total[0] == pytest.approx(770 / proc.CLOCK_TICKS)


def test_cpu_time_and_rss_of_a_real_child():
    code = (
        "import time\n"
        "block = bytearray(200 * 2**20)\n"
        "for i in range(0, len(block), 4096): block[i] = 1\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print('done', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"
        assert proc.cpu_seconds(child.pid) >= 0.25
        assert proc.tree_rss_bytes(child.pid) >= 200 * 2**20
        assert child.pid in proc.tree(child.pid)
    finally:
        child.kill()
        child.wait()
    assert proc.cpu_seconds(child.pid) == 0.0 and proc.threads(child.pid) == []


def test_spread_median_range_and_rendering():
    s = Spread.of([12.0, 10.0, 11.0])
    assert (s.median, s.low, s.high, s.n) == (11.0, 10.0, 12.0, 3)
    assert s.render() == "11.0 (10.0-12.0)" and s.relative == pytest.approx(2 / 11)
    assert Spread.of([1.0, 4.0]).median == 2.5
    assert Spread.of([7.0]).render(0) == "7"
    assert Spread.of([]) is None
    assert Spread.of([1000.0, 2000.0]).scaled(1e-3).render(2) == "1.50 (1.00-2.00)"
