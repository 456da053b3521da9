"""llama-server must run: the native build is probed and a crash falls back to a portable
build configured from the CPU; a peer that never starts is reported with its exit status."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenmill.bench.cpu import CpuInfo
from tokenmill.bench.llama import NATIVE, PORTABLE, ensure_llama_server, portable_options, probe
from tokenmill.bench.peers import PeerUnavailable, describe_exit

SAPPHIRE_RAPIDS = CpuInfo(
    "Intel Xeon (AMX)",
    frozenset(
        {
            "avx",
            "avx2",
            "fma",
            "f16c",
            "bmi2",
            "avx512f",
            "avx512cd",
            "avx512vl",
            "avx512dq",
            "avx512bw",
            "avx512vbmi",
            "avx512_vnni",
            "avx512_bf16",
            "avx_vnni",
            "amx_tile",
            "amx_int8",
            "amx_bf16",
        }
    ),
    (0, 1),
)
ZEN3 = CpuInfo("AMD EPYC", frozenset({"avx", "avx2", "fma", "f16c", "bmi2"}), (0, 1))


def test_portable_build_turns_on_what_the_cpu_has_and_amx_off():
    opts = portable_options(SAPPHIRE_RAPIDS)
    for on in ("GGML_AVX2", "GGML_AVX512", "GGML_AVX512_VNNI", "GGML_AVX512_BF16", "GGML_AVX_VNNI"):
        assert f"-D{on}=ON" in opts
    for off in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"):
        assert f"-D{off}=OFF" in opts
    zen = portable_options(ZEN3)
    assert "-DGGML_AVX2=ON" in zen and "-DGGML_AVX512=OFF" in zen
    assert "-DGGML_AVX512_BF16=OFF" in zen


class Builds:
    """Fake builder and prober: `crashes` names the modes whose binary dies at start."""

    def __init__(self, crashes: set[str]) -> None:
        self.crashes = crashes
        self.built: list[tuple[str, list[str]]] = []

    def build(self, version: str, mode: str, options: list[str], log: Path) -> Path:
        self.built.append((mode, options))
        return Path(f"/cache/{mode}/llama-server")

    def probe(self, binary: Path, gguf: Path, cpus, log_dir: Path) -> None:
        mode = binary.parent.name
        if mode in self.crashes:
            raise PeerUnavailable(
                f"llama-server-probe exited with {describe_exit(-11)} while starting", -11
            )


def test_a_native_build_that_runs_is_used(tmp_path):
    b = Builds(crashes=set())
    got = ensure_llama_server(SAPPHIRE_RAPIDS, Path("m.gguf"), tmp_path, builder=b.build,
                              prober=b.probe)  # fmt: skip
    assert got.build == NATIVE and got.history == () and [m for m, _ in b.built] == [NATIVE]


def test_a_native_build_that_crashes_falls_back_to_portable(tmp_path):
    b = Builds(crashes={NATIVE})
    got = ensure_llama_server(SAPPHIRE_RAPIDS, Path("m.gguf"), tmp_path, builder=b.build,
                              prober=b.probe)  # fmt: skip
    assert got.build == PORTABLE and got.path == Path("/cache/portable/llama-server")
    assert "signal 11 (SIGSEGV)" in got.history[0]
    assert b.built[1] == (PORTABLE, portable_options(SAPPHIRE_RAPIDS))


def test_when_no_build_runs_the_error_names_each_exit_status(tmp_path):
    b = Builds(crashes={NATIVE, PORTABLE})
    with pytest.raises(PeerUnavailable, match=r"native build: .*signal 11.*portable build: "):
        ensure_llama_server(ZEN3, Path("m.gguf"), tmp_path, builder=b.build, prober=b.probe)


def test_the_probe_reports_a_binary_that_segfaults_at_start(tmp_path):
    binary = tmp_path / "bin" / "llama-server"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\necho loading model\nkill -SEGV $$\n")
    binary.chmod(0o755)
    with pytest.raises(PeerUnavailable, match=r"signal 11 \(SIGSEGV\)(.|\n)*loading model") as e:
        probe(binary, tmp_path / "m.gguf", None, tmp_path)
    assert e.value.returncode == -11


def test_exit_descriptions():
    assert describe_exit(3) == "status 3"
    assert describe_exit(-4) == "signal 4 (SIGILL)"
