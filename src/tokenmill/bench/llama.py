"""llama.cpp's llama-server as a peer: built from the llama-cpp-python sdist, then proved.

`scripts/build_llama_server.sh` builds the binary into ~/.cache/tokenmill. A native build
(GGML_NATIVE=ON) is the fastest, but on AMX CPUs it was seen to die at start (general
protection fault, whatever the thread count). So the binary is probed: started on the
packaged GGUF until /health answers. If the native build does not come up, a portable
build (GGML_NATIVE=OFF, the instruction sets this CPU advertises, AMX off) is made and
probed in turn. If neither runs, PeerUnavailable carries both exit statuses.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tokenmill.bench.cpu import CpuInfo
from tokenmill.bench.peers import (
    HOST,
    LOG_TAIL_CHARS,
    PeerUnavailable,
    ServerProcess,
    ServerSpec,
    free_port,
)

LLAMA_CPP_VERSION = "0.3.36"
BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "build_llama_server.sh"
NATIVE, PORTABLE = "native", "portable"
PROBE_TIMEOUT_S = 120.0
PORTABLE_FLAGS = (
    ("GGML_AVX", ("avx",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    # ggml's AVX512 switch compiles with F, CD, VL, DQ and BW together.
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("GGML_AVX512_VBMI", ("avx512f", "avx512vbmi")),
    ("GGML_AVX512_VNNI", ("avx512f", "avx512_vnni")),
    ("GGML_AVX512_BF16", ("avx512f", "avx512_bf16")),
)
"""Each portable-build option and the CPU flags it needs."""
AMX_OFF = ("-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF")


def portable_options(cpu: CpuInfo) -> list[str]:
    """CMake options for a portable build on `cpu`: each instruction set on exactly when
    the CPU has every flag it needs, AMX always off."""
    opts = [
        f"-D{name}={'ON' if all(cpu.has(f) for f in needs) else 'OFF'}"
        for name, needs in PORTABLE_FLAGS
    ]
    return [*opts, *AMX_OFF]


@dataclass(frozen=True)
class LlamaBinary:
    """A llama-server binary that started, and how it was chosen."""

    path: Path
    build: str
    """NATIVE, PORTABLE, or "given" (--llama-server)."""
    history: tuple[str, ...] = ()
    """What happened to builds that were tried before this one (exit statuses)."""


def build(version: str, mode: str, options: list[str], log: Path) -> Path:
    """Run the build script (it reuses a finished build); returns the binary's path or
    raises PeerUnavailable with the log's tail."""
    if not BUILD_SCRIPT.is_file():
        raise PeerUnavailable(
            f"{BUILD_SCRIPT} is missing (not a source checkout); pass --llama-server PATH."
        )
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"llama-server: building or reusing the {mode} build (log {log}) ...", flush=True)
    with log.open("ab") as f:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT), version, mode, *options],
            stdout=subprocess.PIPE,
            stderr=f,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        tail = log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        raise PeerUnavailable(
            f"llama-server ({mode}) could not be built (build exited with status "
            f"{done.returncode}; log {log}):\n{tail}",
            returncode=done.returncode,
        )
    return Path(lines[-1])


def _serve_argv(binary: Path, gguf: Path, port: int) -> list[str]:
    """llama-server serving `gguf` on HOST:`port`; callers add threads, slots, context."""
    return [str(binary), "-m", str(gguf), "--host", HOST, "--port", str(port)]


def probe(binary: Path, gguf: Path, cpus: tuple[int, ...] | None, log_dir: Path) -> None:
    """Start `binary` on `gguf` with one slot and stop it once /health answers; raises
    PeerUnavailable (exit status included) if it dies or never answers."""
    port = free_port()
    argv = [
        *_serve_argv(binary, gguf, port),
        "-t",
        "1",
        "-c",
        "512",
        "--parallel",
        "1",
        "--no-webui",
    ]
    spec = ServerSpec(
        f"llama-server-probe-{binary.parent.parent.name}", argv, port, PROBE_TIMEOUT_S, cpus
    )
    with ServerProcess(spec, log_dir):
        pass


def ensure_llama_server(
    cpu: CpuInfo,
    gguf: Path,
    log_dir: Path,
    version: str = LLAMA_CPP_VERSION,
    cpus: tuple[int, ...] | None = None,
    builder: Callable[[str, str, list[str], Path], Path] = build,
    prober: Callable[[Path, Path, tuple[int, ...] | None, Path], None] = probe,
) -> LlamaBinary:
    """A llama-server that starts on this CPU: the native build if it survives the probe,
    else the portable one. Raises PeerUnavailable naming what each build did."""
    history: list[str] = []
    for mode in (NATIVE, PORTABLE):
        options = portable_options(cpu) if mode == PORTABLE else []
        try:
            binary = builder(version, mode, options, log_dir / "llama-build.log")
            prober(binary, gguf, cpus, log_dir)
        except PeerUnavailable as exc:
            first = str(exc).splitlines()[0]
            print(f"llama-server: the {mode} build failed: {first}", flush=True)
            history.append(f"{mode} build: {first}")
            continue
        return LlamaBinary(binary, mode, tuple(history))
    raise PeerUnavailable("; ".join(history))


def given_binary(
    path: Path, gguf: Path, log_dir: Path, cpus: tuple[int, ...] | None = None
) -> LlamaBinary:
    """A binary passed with --llama-server, probed like a built one."""
    probe(path, gguf, cpus, log_dir)
    return LlamaBinary(path, "given")


def llama_server_spec(
    binary: Path,
    gguf: Path,
    parallel: int,
    ctx_per_slot: int,
    threads: int,
    cpus: tuple[int, ...] | None = None,
    startup_timeout_s: float = 300.0,
) -> ServerSpec:
    """llama-server on the GGUF with continuous batching, `parallel` slots of
    `ctx_per_slot` tokens each, and `threads` threads for both decode and prompt batches."""
    port = free_port()
    argv = [
        *_serve_argv(binary, gguf, port),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "--parallel",
        str(parallel),
        "-c",
        str(parallel * ctx_per_slot),
        "--cont-batching",
        "--no-webui",
    ]
    env = {"OMP_NUM_THREADS": str(threads)}
    return ServerSpec("llama-server", argv, port, startup_timeout_s, cpus, env)
