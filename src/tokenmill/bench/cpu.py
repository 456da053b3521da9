"""The CPU a benchmark runs on: its model, the instruction sets that matter, its topology.

Read at run time from /proc/cpuinfo and /sys, never assumed: the report names what it
found, transformers' best dtype follows it, and llama.cpp's portable build is configured
from it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tokenmill.bench.proc import parse_cpu_list

REPORTED_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
"""The flags the report lists (present or absent): those the engines' kernels dispatch on."""
SYS_CPU = Path("/sys/devices/system/cpu")


@dataclass(frozen=True)
class CpuInfo:
    """What the benchmark needs to know about the CPU."""

    model: str
    flags: frozenset[str]
    """Every flag /proc/cpuinfo lists for the first CPU."""
    cpus: tuple[int, ...]
    """The logical CPUs this process may use."""
    siblings: dict[int, frozenset[int]] = field(default_factory=dict)
    """Per logical CPU: the logical CPUs sharing its physical core (itself included)."""

    def has(self, flag: str) -> bool:
        """Whether the CPU advertises `flag`."""
        return flag in self.flags

    @property
    def has_amx(self) -> bool:
        """Any AMX tile support (the units llama.cpp's native build crashed on)."""
        return any(f.startswith("amx") for f in self.flags)

    @property
    def best_torch_dtype(self) -> str:
        """transformers' fastest exact-enough dtype here: bfloat16 where the CPU computes it
        natively (AVX512-BF16 or AMX), else float32 (emulated bfloat16 is slower)."""
        return "bfloat16" if self.has("avx512_bf16") or self.has("amx_bf16") else "float32"

    def flag_summary(self) -> str:
        """ "avx2 yes, avx512f no, ..." over REPORTED_FLAGS."""
        return ", ".join(f"{f} {'yes' if f in self.flags else 'no'}" for f in REPORTED_FLAGS)

    def core_of(self, cpu: int) -> frozenset[int]:
        """The logical CPUs on `cpu`'s physical core (just `cpu` when unknown)."""
        return self.siblings.get(cpu, frozenset({cpu}))

    def to_dict(self) -> dict:
        """JSON-ready."""
        d = asdict(self)
        d["flags"] = sorted(f for f in self.flags if f in REPORTED_FLAGS)
        d["siblings"] = {str(k): sorted(v) for k, v in self.siblings.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CpuInfo:
        """The inverse of to_dict (flags narrowed to REPORTED_FLAGS)."""
        return cls(
            model=d["model"],
            flags=frozenset(d["flags"]),
            cpus=tuple(d["cpus"]),
            siblings={int(k): frozenset(v) for k, v in d.get("siblings", {}).items()},
        )


# Microarchitectures by CPUID family (AMD) or family 6 model (Intel), for the ones these
# benchmarks have met. A virtual machine often shows only a generic model name ("AMD EPYC"),
# which says nothing of the core: Zen 4 and Zen 5 differ twofold in float32 throughput.
_AMD_FAMILIES = {23: "Zen or Zen 2", 25: "Zen 3 or Zen 4", 26: "Zen 5"}
_INTEL_MODELS = {85: "Skylake-SP or Cascade Lake", 106: "Ice Lake-SP", 143: "Sapphire Rapids",
                 207: "Emerald Rapids", 173: "Granite Rapids"}  # fmt: skip


def _core_name(fields: dict[str, str]) -> str:
    """ "family 26, model 2, stepping 1: Zen 5" from /proc/cpuinfo's fields ("" without
    them)."""
    try:
        family, model = int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        return ""
    ids = f"family {family}, model {model}, stepping {fields.get('stepping', '?')}"
    vendor = fields.get("vendor_id", "")
    core = _AMD_FAMILIES.get(family) if vendor == "AuthenticAMD" else None
    if vendor == "GenuineIntel" and family == 6:
        core = _INTEL_MODELS.get(model)
    return f"{ids}: {core}" if core else ids


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """The first CPU's model name, with its CPUID family, model and stepping (and the
    microarchitecture where known), and its flags, from /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if not key and fields:
            break  # the first CPU's block ends at its blank line
        if key and key not in fields:
            fields[key] = value.strip()
    model = fields.get("model name", "unknown CPU")
    core = _core_name(fields)
    if core:
        model = f"{model} ({core})"
    return model, frozenset(fields.get("flags", "").split())


def read_siblings(cpus: tuple[int, ...], sys_cpu: Path = SYS_CPU) -> dict[int, frozenset[int]]:
    """Each CPU's SMT siblings from sysfs; a CPU without the file is its own core."""
    out = {}
    for cpu in cpus:
        topo = sys_cpu / f"cpu{cpu}" / "topology"
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                out[cpu] = parse_cpu_list((topo / name).read_text())
                break
            except OSError:
                continue
        else:
            out[cpu] = frozenset({cpu})
    return out


def detect() -> CpuInfo:
    """This machine's CPU, as this process sees it (its affinity decides `cpus`)."""
    try:
        model, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        model, flags = "unknown CPU", frozenset()
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    return CpuInfo(model=model, flags=flags, cpus=cpus, siblings=read_siblings(cpus))
