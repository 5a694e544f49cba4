# The two commands: `make reproduce` (main job, default profile) and `make test`.
# Every target sets up the project's virtual environment (.venv) on first use.
SHELL := /bin/bash
PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
profile ?= quick
run_dir ?= runs/$(profile)
data_dir ?=
notebooks ?=

.PHONY: reproduce test test-unit test-notebooks lab setup clean-run help

help:
	@echo "make reproduce [profile=quick|smoke|paper] [data_dir=/path/to/real/data] [run_dir=...]"
	@echo "make test       unit tests + nbval regression of the committed notebooks"
	@echo "make lab        JupyterLab in the project's environment"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet "pip>=24"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mer_lib)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)

reproduce: $(STAMP)
	$(PY) -m mer_lib.runner --profile $(profile) --run-dir $(run_dir) \
	    $(if $(data_dir),--data-dir $(data_dir)) $(if $(notebooks),--notebooks $(notebooks))

test: $(STAMP)
	$(PY) -m pytest tests
	run=$$(mktemp -d) && MER_RUN_DIR=$$run $(PY) -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider notebooks; rc=$$?; rm -rf $$run; exit $$rc

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

clean-run:
	rm -rf $(run_dir)
