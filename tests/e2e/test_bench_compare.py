"""A tiny real `tokenmill bench compare`: tokenmill and the transformers worker pinned and
measured, and a llama-server that segfaults at start reported as failed with its signal."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.e2e.conftest import tokenmill_command

pytestmark = pytest.mark.slow

CRASHING = "#!/bin/sh\necho 'fake llama-server: loading'\nkill -SEGV $$\n"


def test_a_tiny_compare_records_peers_pins_them_and_reports_the_crash(tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("a fair comparison needs two cores")
    fake = tmp_path / "bin" / "llama-server"
    fake.parent.mkdir()
    fake.write_text(CRASHING)
    fake.chmod(0o755)
    out = tmp_path / "doc" / "benchmarks.md"
    args = [
        "bench", "compare", "--plans", "single", "--no-variants", "--concurrency", "1",
        "--num-prompts", "2", "--input-len", "32", "--output-len", "8", "--repeats", "2",
        "--prompt-lens", "64", "--ttft-requests", "1", "--ttft-output-len", "4",
        "--llama-server", str(fake), "--out", str(out),
        # Shared CI cores are never quiet: let every run count, but keep the load figures.
        "--busy-cores", "64", "--max-wait-s", "0", "--retries", "0", "--probe-s", "0.5",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMILL_")}
    done = subprocess.run(
        [*tokenmill_command(), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads(out.with_suffix(".json").read_text())
    (plan,) = record["plans"]
    assert plan["plan"]["client_cpus"] != plan["plan"]["peer_cpus"]
    assert plan["plan"]["threads"] == 1
    peers = {p["name"]: p for p in plan["peers"]}
    assert set(peers) == {"tokenmill", "llama-server", "transformers"}
    for name in ("tokenmill", "transformers"):
        assert peers[name]["failures"] == {}, peers[name]["failures"]
        levels = {(lv["suite"], lv["key"]): lv["samples"] for lv in peers[name]["levels"]}
        assert set(levels) == {("throughput", 1), ("ttft", 64)}
        for samples in levels.values():
            assert len(samples) == 2
            for s in samples:
                assert s["completed"] >= 1 and s["failed"] == 0 and s["output_tok_s"] > 0
                assert s["rss_peak_bytes"] > 50e6 and s["load_during"]["seconds"] > 0
                assert s["strays"] == []
    assert "taskset" in peers["tokenmill"]["settings"]["command"]
    assert "--num-threads 1" in peers["tokenmill"]["settings"]["command"]
    crash = peers["llama-server"]["failures"]["throughput"]
    assert "signal 11 (SIGSEGV)" in crash and peers["llama-server"]["levels"] == []
    page = out.read_text()
    assert "- **llama-server** (throughput suite): no working llama-server: " in page
    assert "signal 11 (SIGSEGV)" in page and "Flags: avx2" in page
    # The targets are set for 100-token prompts and 128 output tokens: not judged here.
    assert "0 met, 0 not met, 9 not judged." in page and "workload differs" in page
    assert out.with_suffix(".png").is_file()
