# frankenllama — regenerate every figure (`make figures`), run the tests (`make test`) or explore (`make lab`) on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEPLOY_STAMP := $(VENV)/.deploy-installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
NUMBERS := $(foreach nb,$(NOTEBOOKS),$(firstword $(subst _, ,$(notdir $(nb)))))
PROFILE ?= default
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# relative paths in notebook parameters and on the command line mean the folder make runs in (the repository root)
export FRANKENLLAMA_CWD := $(CURDIR)

.PHONY: install deploy-deps data figures test lab deploy-check browser-deps clean $(addprefix notebook-,$(NUMBERS))

$(STAMP): requirements.txt requirements-assets.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-assets.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name frankenllama --display-name "frankenllama (.venv)" > /dev/null
	touch $@

install: $(STAMP)

# The llama.cpp runtime (llama-cpp-python, a source distribution): notebook 06 and tests/deploy need it.
# Built once with every core (about 9 CPU-minutes; pip caches the wheel, so a rebuilt venv reuses it).
# On x86-64 without llama.cpp's AMX kernels: on a VM whose CPU advertises AMX (Sapphire Rapids) the
# native build's first matrix product died at `ldtilecfg` (general-protection fault, kernel gone);
# the AVX-512 kernels do the work instead. Then one SmolLM2 prefill and decode in a fresh process
# proves the runtime works here before anything relies on it.
LLAMA_CPP_FLAGS := $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
$(DEPLOY_STAMP): $(STAMP) requirements-deploy.txt
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS='-DCMAKE_C_FLAGS="$(LLAMA_CPP_FLAGS)" -DCMAKE_CXX_FLAGS="$(LLAMA_CPP_FLAGS)"' \
	  $(PY) -m pip install --quiet -r requirements-deploy.txt
	@$(PY) frankenllama/export/probe.py --prompt 16 --decode 4 \
	  "$$($(PY) -c 'from frankenllama.assets import asset_path; print(asset_path("smollm2-gguf"))')" > /dev/null \
	  || { echo "llama.cpp does not run on this machine (above). A wheel built before with other flags may be" \
	            "in pip's cache: $(PY) -m pip cache remove llama_cpp_python && $(PY) -m pip uninstall -y" \
	            "llama-cpp-python && make deploy-deps"; exit 1; }
	touch $@

deploy-deps: $(DEPLOY_STAMP)

# Prepared inputs: the dequantised model cached as safetensors (once, ~15 s).
data: $(STAMP)
	$(PY) -m frankenllama.prepare

# One notebook, headless, on profile $(PROFILE) (`make notebook-02`, `make notebook-03 PROFILE=smoke`).
# A notebook reads the caches its dependencies wrote and computes whatever of them is missing.
# (`make figures` prepares the data once, then runs each notebook with DATA_READY=1: no check per notebook)
$(addprefix notebook-,$(NUMBERS)): notebook-%: $(if $(DATA_READY),,data)
	@mkdir -p build/notebooks
	@nb=$$(ls notebooks/$*_*.py) && name=$$(basename $$nb .py) && \
	  echo "== $$name ($(PROFILE))" && start=$$(date +%s) && \
	  $(VENV)/bin/jupytext --quiet --to ipynb --output build/notebooks/$$name.source.ipynb $$nb && \
	  $(VENV)/bin/papermill --engine frankenllama --kernel frankenllama --cwd notebooks -p profile $(PROFILE) \
	    build/notebooks/$$name.source.ipynb build/notebooks/$$name.ipynb && \
	  echo "== $$name took $$(( $$(date +%s) - start )) s"

notebook-06: $(DEPLOY_STAMP)  # runs the exported models in llama.cpp

# Every notebook in order on the default profile; figures land in figures/.
figures: data
	@for n in $(NUMBERS); do $(MAKE) --no-print-directory notebook-$$n DATA_READY=1 || exit 1; done

# JupyterLab on the workbook, with the project's kernel ("frankenllama (.venv)").
lab: data
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

# The browser suite drives Debian's Chromium (Playwright's own browser download is not used).
browser-deps:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; } \
	  || echo "chromium could not be installed: the browser suite (tests/browser) will be skipped"

# Every test, the llama.cpp checks (tests/deploy) and notebook 06 included: installs their runtime first.
test: $(STAMP) $(DEPLOY_STAMP) browser-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# llama.cpp itself against transformers: exported GGUF files (original, whole-block and sub-block
# pruned) must give the same logits and greedy tokens. Builds llama-cpp-python once (pip caches it).
deploy-check: $(DEPLOY_STAMP)
	$(PY) -m pytest -m deploy tests/deploy $(PYTEST_ARGS)

clean:
	rm -rf build data/cache
