"""docs/benchmarks.md rendered from a recorded run: every number from the record."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.unit.bench.records import peer, record, sample
from tokenmill.bench.benchmarks_doc import render, write_benchmarks_doc
from tokenmill.bench.record import CompareRecord


def recorded_run() -> CompareRecord:
    tm = peer(
        "tokenmill",
        c1=[sample(output_tok_s=v, ttft_ms=90.0) for v in (50.0, 52.0, 51.0)],
        c32=[sample(output_tok_s=200.0)] * 3,
        c64=[sample(output_tok_s=250.0, rss=900_000_000)] * 3,
        p512=[sample(prompt=512.0, ttft_ms=200.0)] * 3,
    )
    tm_int8 = peer(
        "tokenmill int8",
        c1=[sample(output_tok_s=10.0), sample(output_tok_s=12.0), sample(100.0, clean=False)],
    )
    ls = peer(
        "llama-server",
        c1=[sample(output_tok_s=40.0)] * 3,
        c32=[sample(output_tok_s=90.0)] * 3,
        c64=[sample(output_tok_s=80.0)] * 3,
        p512=[sample(prompt=512.0, ttft_ms=300.0)] * 3,
    )
    hf = peer("transformers")
    hf.failures["throughput"] = (
        "failed to start: transformers worker exited with signal 11 (SIGSEGV); log x\nTrace"
    )
    return record([tm, tm_int8, ls, hf], notes=["llama-server: portable build /cache/x"])


def table_row(text: str, *starts: str) -> str:
    prefix = "| " + " | ".join(starts) + " |"
    rows = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(rows) == 1, (prefix, rows)
    return rows[0]


def test_the_header_names_the_cpu_its_flags_and_the_transformers_dtype():
    page = render(recorded_run())
    assert "CPU: AMD EPYC (test); usable CPUs 0, 1." in page
    assert "avx2 yes" in page and "avx512_bf16 no" in page and "amx_tile no" in page
    assert "transformers runs in float32" in page
    assert "**single**: 1 core (CPU 1), 1 thread per peer; client on CPU 0." in page


def test_targets_say_no_when_not_met_and_peer_failed_when_a_peer_failed():
    page = render(recorded_run())
    c1 = table_row(page, "output tok/s at concurrency 1", ">= 1.5x llama-server")
    assert "| 51.0 (50.0-52.0) | 40.0 (40.0-40.0) | 1.27x | **no** |" in c1
    c64 = table_row(page, "output tok/s at concurrency 64", ">= 4x llama-server")
    assert "**no**" in c64 and "3.12x" in c64
    hf = table_row(page, "output tok/s at concurrency 1", ">= 4x transformers")
    assert "**peer failed**" in hf and "signal 11 (SIGSEGV)" in hf
    assert "| **yes** |" in table_row(page, "server RSS at 64 streams", "<= 1 GB")
    assert "| **yes** |" in table_row(page, "TTFT p50, 1 stream, 100-token prompt", "<= 0.1 s")
    assert "3 met, 4 not met, 2 not judged." in page


def test_busy_runs_are_listed_but_left_out_of_every_figure():
    page = render(recorded_run())
    row = table_row(page, "1", "tokenmill int8")
    assert "| 11.0 (10.0-12.0) (2 of 3) |" in row  # the busy 100 tok/s run is not in it
    busy = [line for line in page.splitlines() if "**no, busy**" in line]
    assert len(busy) == 1 and "| tokenmill int8 | throughput 1 | 3 | 100.0 |" in busy[0]
    assert "foreign 0.90 cores" in busy[0]


def test_a_failed_peer_keeps_its_row_with_the_reason():
    page = render(recorded_run())
    assert "| 1 | transformers | failed |" in page
    assert "- **transformers** (throughput suite): failed to start: transformers worker " in page
    assert "Trace" in page


def test_decode_bound_and_prefill_come_from_the_record():
    page = render(recorded_run())
    assert "a decode step reads 100.0 MB (bfloat16 (test)); bound 100 tok/s" in page
    assert "| 512 | tokenmill | 200 (200-200) | 2560 (2560-2560) |" in page


def test_the_record_round_trips_through_json(tmp_path):
    rec = recorded_run()
    again = CompareRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert render(again) == render(rec)
    write_benchmarks_doc(rec, tmp_path / "benchmarks.md")
    text = (tmp_path / "benchmarks.md").read_text()
    assert text == render(rec, {"single": "benchmarks.png"})
    assert (tmp_path / "benchmarks.png").stat().st_size > 0


def test_rendering_does_not_import_the_runner():
    code = (
        "import sys, tokenmill.bench.benchmarks_doc\n"
        "bad = [m for m in ('tokenmill.bench.compare', 'torch') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_rewrite_keeps_the_other_measurements_below_the_marker(tmp_path):
    from tokenmill.bench.benchmarks_doc import KEPT

    out = tmp_path / "benchmarks.md"
    tail = f"{KEPT}\n\n## Beam search\n\n| width | tok/s |\n|---|---|\n| 4 | 12.5 |\n"
    out.write_text("# Benchmarks\n\nan older run's tables\n\n" + tail)
    rec = recorded_run()
    write_benchmarks_doc(rec, out)
    text = out.read_text()
    assert text.startswith(render(rec, {"single": "benchmarks.png"}))
    assert text.endswith(tail) and "an older run's tables" not in text
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def run_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokenmill.bench.cli", "report", *args],
        check=False,
        capture_output=True,
        text=True,
    )


def test_report_rerenders_the_page_from_the_json_record(tmp_path):
    rec = recorded_run()
    (tmp_path / "run.json").write_text(json.dumps(rec.to_dict()))
    done = run_report(str(tmp_path / "run.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "run.md").read_text() == render(rec, {"single": "run.png"})


def test_report_excludes_a_repeat_from_every_figure_and_says_why(tmp_path):
    """tokenmill's c=1 repeats were 50, 52 and 51 tok/s (median 51); taking out the
    second leaves 50 and 51 (median 50.5, "2 of 3"), in the page and in the record."""
    path = tmp_path / "run.json"
    path.write_text(json.dumps(recorded_run().to_dict()))
    why = "answered from a cache"
    done = run_report(str(path), "--exclude", "tokenmill:throughput:1:2", "--why", why)
    assert done.returncode == 0, done.stdout + done.stderr
    page = (tmp_path / "run.md").read_text()
    assert table_row(page, "1", "tokenmill").split(" | ")[2] == "50.5 (50.0-51.0) (2 of 3)"
    assert "Corrected after the run: repeat 2 of tokenmill's throughput 1" in page
    again = CompareRecord.from_dict(json.loads(path.read_text()))
    level = again.plans[0].peer("tokenmill").level("throughput", 1)
    assert [s.clean for s in level.samples] == [True, False, True]
    assert level.samples[1].errors == [f"not counted: {why}"]
    assert render(again, {"single": "run.png"}) == page


def test_report_refuses_an_exclusion_it_cannot_find_or_explain(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(recorded_run().to_dict()))
    before = path.read_text()
    missing = run_report(str(path), "--exclude", "tokenmill:throughput:8:1", "--why", "x")
    assert missing.returncode == 2 and "no repeat 1 of throughput 8" in missing.stdout
    unexplained = run_report(str(path), "--exclude", "tokenmill:throughput:1:1")
    assert unexplained.returncode == 2 and "--why" in unexplained.stdout
    assert path.read_text() == before and not (tmp_path / "run.md").exists()
    (tmp_path / "bad.json").write_text("{}")
    bad = run_report(str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "not a bench compare record" in bad.stdout
