"""The comparison's orchestration with fake peers: interleaved repeats, every peer on the same
requests, and a peer that cannot start or dies keeping its row with the reason."""

from __future__ import annotations

import contextlib

import pytest

from tokenmill.bench import compare
from tokenmill.bench.compare import CompareConfig
from tokenmill.bench.gate import Gate, GateConfig, LoadSample
from tokenmill.bench.lineup import LLAMA, TOKENMILL, TRANSFORMERS
from tokenmill.bench.metrics import RequestResult, summarize
from tokenmill.bench.peers import PeerUnavailable
from tokenmill.bench.pinning import CorePlan
from tokenmill.bench.record import THROUGHPUT, PlanRecord
from tokenmill.bench.suites import Suite
from tokenmill.bench.workload import BenchRequest

PLAN = CorePlan("single", (0,), (1,), 1)
QUIET = LoadSample(2.0, 0.01, 0.0, 1.0)
BUSY = LoadSample(2.0, 0.8, 0.0, 3.0)


def make_suite(keys=(1, 8), repeats=2) -> Suite:
    """Distinct requests per (key, repeat): the prompt names its level and repeat."""
    requests = {
        (k, r): [BenchRequest(f"k{k} r{r} #{i}", 10, 4) for i in range(2)]
        for k in keys
        for r in range(repeats)
    }
    warm = BenchRequest("warm", 10, 4)
    return Suite(THROUGHPUT, tuple(keys), warm, requests, {"dataset": "random"})


class FixedMeter:
    def __init__(self, sample: LoadSample) -> None:
        self.sample = sample

    def start(self) -> None:
        pass

    def stop(self) -> LoadSample:
        return self.sample


def make_gate(sample: LoadSample = QUIET) -> Gate:
    cfg = GateConfig(probe_s=1.0, poll_s=0.0, max_wait_s=0.0, retries=0)
    ticks = iter(range(10_000))
    return Gate(cfg, lambda own, cpus: FixedMeter(sample), lambda s: None, lambda: next(ticks))


class FakePeer:
    """Answers every request with 4 tokens; `dies_after` runs, then polls as killed."""

    def __init__(self, name: str, events: list, dies_after: int | None = None) -> None:
        self.name, self.events, self.dies_after = name, events, dies_after
        self.settings = {"command": f"run {name}"}
        self.runs = 0
        self.warmed: list[BenchRequest] = []

    @property
    def pid(self) -> int:
        return 4242

    def poll(self) -> int | None:
        return -9 if self.dies_after is not None and self.runs >= self.dies_after else None

    def warm_up(self, request: BenchRequest) -> None:
        self.warmed.append(request)

    def run(self, requests, concurrency, timeout_s, slo):
        self.runs += 1
        self.events.append(("run", self.name, requests[0].prompt.split(" #")[0], concurrency))
        results = [RequestResult(True, r.prompt_len, 4, ttft=0.1, e2e=0.4) for r in requests]
        return summarize(results, 1.0, slo)


class FakeRss:
    def __init__(self, pid: int) -> None:
        self.peak = 123_000_000

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


@pytest.fixture
def world(monkeypatch):
    """Fake `start` (by peer name: a FakePeer, or an exception to raise), no real pinning,
    no RSS sampling. Returns (events, behaviour)."""
    events: list = []
    behaviour: dict = {}
    peers: dict[str, FakePeer] = {}

    @contextlib.contextmanager
    def fake_start(defn, plan, ctx):
        how = behaviour.get(defn.name)
        events.append(("start", defn.name))
        if isinstance(how, Exception):
            raise how
        peer = FakePeer(defn.name, events, dies_after=how)
        peers[defn.name] = peer
        try:
            yield peer
        finally:
            events.append(("stop", defn.name))

    monkeypatch.setattr(compare, "start", fake_start)
    monkeypatch.setattr(compare.pinning, "enforce", lambda pid, cpus: [])
    monkeypatch.setattr(compare, "PeakRss", FakeRss)
    return events, behaviour, peers


def run_suite(suite: Suite, llama_failure: str = "", gate: Gate | None = None) -> PlanRecord:
    cfg = CompareConfig(repeats=2, variants=(("int8", ("--quantization", "int8")),))
    plan_rec = PlanRecord(PLAN)
    compare._run_suite(suite, plan_rec, cfg, None, gate or make_gate(), llama_failure)
    return plan_rec


def test_lineup_is_defaults_then_variants_then_peers():
    cfg = CompareConfig(variants=(("int8", ("--quantization", "int8")),))
    rows = [(d.name, d.kind, d.args) for d in cfg.lineup]
    assert rows == [
        (TOKENMILL, TOKENMILL, ()),
        ("tokenmill int8", TOKENMILL, ("--quantization", "int8")),
        (LLAMA, LLAMA, ()),
        (TRANSFORMERS, TRANSFORMERS, ()),
    ]


def test_repeats_are_interleaved_and_every_peer_gets_the_same_requests(world):
    events, _, peers = world
    suite = make_suite()
    plan_rec = run_suite(suite)
    names = [TOKENMILL, "tokenmill int8", LLAMA, TRANSFORMERS]
    runs = [e[1:] for e in events if e[0] == "run"]
    expected = [
        (name, f"k{k} r{r}", k) for k in (1, 8) for r in range(2) for name in names
    ]  # fmt: skip
    assert runs == expected
    # All started (and warmed) before the first run, stopped after the last.
    kinds = [e[0] for e in events]
    assert kinds[:4] == ["start"] * 4 and kinds[-4:] == ["stop"] * 4
    assert all(p.warmed == [suite.warm_up] for p in peers.values())
    assert [p.name for p in plan_rec.peers] == names
    for p in plan_rec.peers:
        assert p.failures == {}
        assert p.settings["command"] == f"run {p.name}"
        assert [(lv.key, len(lv.samples)) for lv in p.levels] == [(1, 2), (8, 2)]
        s = p.levels[0].samples[0]
        assert s.clean and s.attempts == 1 and s.rss_peak_bytes == 123_000_000
        assert s.completed == 2 and s.output_tok_s == 8.0 and s.load_during == QUIET


def test_a_peer_that_cannot_start_keeps_its_row_with_the_exit_status(world):
    events, behaviour, _ = world
    behaviour[TRANSFORMERS] = PeerUnavailable("worker exited with signal 11 (SIGSEGV)", -11)
    plan_rec = run_suite(make_suite())
    hf = plan_rec.peer(TRANSFORMERS)
    assert hf is not None and hf.levels == []
    assert hf.failures == {THROUGHPUT: "failed to start: worker exited with signal 11 (SIGSEGV)"}
    assert not any(e[0] == "run" and e[1] == TRANSFORMERS for e in events)
    assert len(plan_rec.peer(TOKENMILL).levels) == 2


def test_an_unavailable_llama_server_is_recorded_and_never_started(world):
    events, _, _ = world
    plan_rec = run_suite(make_suite(), llama_failure="no working llama-server: status 1")
    llama = plan_rec.peer(LLAMA)
    assert llama.failures == {THROUGHPUT: "no working llama-server: status 1"}
    assert llama.levels == []
    assert ("start", LLAMA) not in events


def test_a_peer_that_dies_is_recorded_where_it_died_and_not_run_again(world):
    events, behaviour, _ = world
    behaviour["tokenmill int8"] = 1
    plan_rec = run_suite(make_suite())
    int8 = plan_rec.peer("tokenmill int8")
    assert int8.failures == {THROUGHPUT: "exited with signal 9 (SIGKILL) at throughput 1, repeat 1"}
    assert [len(lv.samples) for lv in int8.levels] == [1]
    assert sum(e[:2] == ("run", "tokenmill int8") for e in events) == 1
    assert [len(lv.samples) for lv in plan_rec.peer(TOKENMILL).levels] == [2, 2]


def test_runs_on_a_busy_machine_are_kept_but_marked_busy(world):
    plan_rec = run_suite(make_suite(keys=(1,)), gate=make_gate(BUSY))
    samples = plan_rec.peer(TOKENMILL).levels[0].samples
    assert [s.clean for s in samples] == [False, False]
    assert all(s.load_before == BUSY and s.load_during == BUSY for s in samples)
    assert plan_rec.peer(TOKENMILL).levels[0].spread("output_tok_s") is None


def test_a_peer_started_differently_for_a_later_suite_keeps_both_commands(world):
    """llama-server runs with --parallel 1 for the TTFT suite: the page must show that
    command beside the throughput suite's, not only the last one started."""
    _, _, _peers = world
    cfg = CompareConfig(repeats=1)
    plan_rec = PlanRecord(PLAN)
    compare._run_suite(make_suite(keys=(1,), repeats=1), plan_rec, cfg, None, make_gate(), "")
    original = compare.start

    @contextlib.contextmanager
    def restarted(defn, plan, ctx):
        with original(defn, plan, ctx) as peer:
            if defn.name == LLAMA:
                peer.settings = {"command": "run llama-server --parallel 1"}
            yield peer

    compare.start = restarted
    try:
        ttft = make_suite(keys=(1,), repeats=1)
        ttft = Suite("ttft", ttft.keys, ttft.warm_up, ttft.requests, ttft.description)
        compare._run_suite(ttft, plan_rec, cfg, None, make_gate(), "")
    finally:
        compare.start = original
    assert plan_rec.peer(LLAMA).settings == {
        "command": f"run {LLAMA}",
        "command (ttft)": "run llama-server --parallel 1",
    }
    assert plan_rec.peer(TOKENMILL).settings == {"command": f"run {TOKENMILL}"}
