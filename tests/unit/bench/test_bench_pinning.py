"""The pinning plan (which CPUs the client and the peers get) and applying it to threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tokenmill.bench import pinning, proc
from tokenmill.bench.cpu import CpuInfo, parse_cpuinfo, read_siblings
from tokenmill.bench.pinning import ALL, SINGLE, CorePlan, PinningError

TWO = CpuInfo("two cores", frozenset(), (0, 1))
# 4 physical cores with SMT: CPU n and n + 4 share a core.
SMT = CpuInfo(
    "smt", frozenset(), tuple(range(8)), {c: frozenset({c % 4, c % 4 + 4}) for c in range(8)}
)


def test_two_cores_client_on_0_peers_on_1_with_one_thread():
    p = pinning.plan(TWO, SINGLE)
    assert (p.client_cpus, p.peer_cpus, p.threads) == ((0,), (1,), 1)


def test_on_two_cores_all_but_the_client_is_the_single_plan_and_runs_once():
    assert pinning.plan(TWO, ALL).same_placement(pinning.plan(TWO, SINGLE))
    assert [p.name for p in pinning.plans(TWO, (SINGLE, ALL))] == [SINGLE]


def test_smt_siblings_of_the_client_core_are_kept_from_the_peers():
    single, every = pinning.plans(SMT, (SINGLE, ALL))
    assert single.client_cpus == (0, 4) and single.peer_cpus == (1,) and single.threads == 1
    assert every.client_cpus == (0, 4)
    assert every.peer_cpus == (1, 2, 3, 5, 6, 7) and every.threads == 6


def test_the_plan_uses_only_the_cpus_this_process_may_use():
    cpu = CpuInfo("subset", frozenset(), (2, 3))
    p = pinning.plan(cpu, ALL)
    assert (p.client_cpus, p.peer_cpus, p.threads) == ((2,), (3,), 1)


@pytest.mark.parametrize(
    "cpu",
    [
        CpuInfo("one", frozenset(), (0,)),
        CpuInfo(
            "one core, two threads",
            frozenset(),
            (0, 1),
            {0: frozenset({0, 1}), 1: frozenset({0, 1})},
        ),
    ],
)
def test_fewer_than_two_physical_cores_is_refused(cpu):
    with pytest.raises(PinningError, match="two physical cores"):
        pinning.plan(cpu, SINGLE)


def test_a_plan_cannot_share_cpus_between_client_and_peers():
    with pytest.raises(PinningError, match="share"):
        CorePlan("bad", (0, 1), (1,), 1)


def test_plan_title_names_cpus_threads_and_client():
    assert pinning.plan(TWO, SINGLE).title == "1 core (CPU 1), 1 thread per peer; client on CPU 0"


def test_cpu_flags_and_siblings_are_read_from_proc_and_sys(tmp_path):
    text = "processor: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 amx_tile avx512_bf16\n"
    model, flags = parse_cpuinfo(text)
    cpu = CpuInfo(model, flags, (0,))
    assert model == "Test CPU" and cpu.has_amx and cpu.best_torch_dtype == "bfloat16"
    assert "avx2 yes" in cpu.flag_summary() and "avx512f no" in cpu.flag_summary()
    assert TWO.best_torch_dtype == "float32"
    topo = tmp_path / "cpu3" / "topology"
    topo.mkdir(parents=True)
    (topo / "core_cpus_list").write_text("3,7\n")
    assert read_siblings((3, 5), tmp_path) == {3: frozenset({3, 7}), 5: frozenset({5})}


@pytest.mark.parametrize(
    ("vendor", "family", "model", "expected"),
    [
        ("AuthenticAMD", 26, 2, "AMD EPYC (family 26, model 2, stepping 1: Zen 5)"),
        ("GenuineIntel", 6, 143, "AMD EPYC (family 6, model 143, stepping 1: Sapphire Rapids)"),
        ("AuthenticAMD", 99, 1, "AMD EPYC (family 99, model 1, stepping 1)"),
    ],
)
def test_the_cpu_model_names_its_cpuid_family_and_core(vendor, family, model, expected):
    """A virtual machine's model name ("AMD EPYC") does not tell Zen 4 from Zen 5; the
    report adds the CPUID numbers, and the core where they are known. Only the first
    CPU's block is read."""
    first = (
        f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
        "model name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu avx2\n"
    )
    second = "processor\t: 1\nvendor_id\t: Other\ncpu family\t: 1\nflags\t\t: fpu\n"
    model_name, flags = parse_cpuinfo(f"{first}\n{second}\n")
    assert model_name == expected and flags == frozenset({"fpu", "avx2"})
    assert parse_cpuinfo("processor: 0\nmodel name: Bare\n")[0] == "Bare"


CHILD = (
    "import threading, time\n"
    "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
    "print('up', flush=True)\n"
    "time.sleep(30)\n"
)


@pytest.fixture
def child():
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "up"
    yield p
    p.kill()
    p.wait()


def test_pin_restricts_every_thread_and_enforce_repins_strays(child):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two usable CPUs")
    target = (cpus[-1],)
    assert pinning.pin(child.pid, target) == 2
    tids = proc.threads(child.pid)
    assert all(proc.thread_affinity(child.pid, t) == frozenset(target) for t in tids)
    os.sched_setaffinity(tids[1], cpus)  # as a runtime that sets its own affinity would
    assert pinning.strays(child.pid, target) == [f"{child.pid}/{tids[1]}: {cpus}"]
    assert pinning.enforce(child.pid, target) == [f"{child.pid}/{tids[1]}: {cpus}"]
    assert pinning.strays(child.pid, target) == []


def test_pinned_argv_prefixes_taskset_so_the_command_shows_the_placement():
    argv, preexec = pinning.pinned_argv(["llama-server", "-t", "1"], (1, 3))
    if argv[0].endswith("taskset"):
        assert argv[1:] == ["-c", "1,3", "llama-server", "-t", "1"] and preexec is None
    else:
        assert argv == ["llama-server", "-t", "1"] and callable(preexec)
