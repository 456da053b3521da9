"""Benchmarks of serving performance: `tokenmill bench serve` and `tokenmill bench compare`.

A program, not a test: it prints figures and writes reports (docs/benchmarks.md). The CLI
hook is `tokenmill.bench.cli.add_bench_parser`.
"""
