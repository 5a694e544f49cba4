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
executor ?=

.PHONY: reproduce test test-unit test-notebooks lab setup clean-run help

help:
	@echo "make reproduce [profile=quick|smoke|paper|paper-synthetic] [data_dir=/path/to/real/data] [run_dir=...] [notebooks=\"01 02\"] [executor=local:8|ray:auto]"
	@echo "               relative data_dir and run_dir are taken from the folder make runs in (with make -C DIR: DIR)"
	@echo "make test       unit tests + nbval regression of the committed notebooks (default and avx2-capped kernels)"
	@echo "make test-unit  unit tests only; make test-notebooks [kernels=default|avx2]: one regression run"
	@echo "make lab        JupyterLab in the project's environment"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet "pip>=24"
	$(PY) -m pip install --quiet -e ".[dev,cluster]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mer_lib)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)

# The runner runs in this folder and makes relative paths absolute before papermill runs the kernels
# in notebooks/; an empty or unmatched notebooks= selection is an error there (it lists the notebooks).
reproduce: $(STAMP)
	$(PY) -m mer_lib.runner --profile "$(profile)" --run-dir "$(run_dir)" \
	    $(if $(data_dir),--data-dir "$(data_dir)") $(if $(notebooks),--notebooks $(notebooks)) $(if $(executor),--executor "$(executor)")

# The nbval regression runs twice: with the default CPU kernels and with the vectorised kernels
# capped at AVX2 (other float rounding on the same machine, a stand-in for another CPU). Exact
# checks (# NBVAL_CHECK_OUTPUT) cover machine-independent outputs; model-dependent numbers are
# checked by mer_lib.regression within seed-spread tolerances (strict: a miss fails the cell).
KERNELS_default :=
KERNELS_avx2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
kernels ?= default

test: $(STAMP)
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory test-notebooks kernels=default
	$(MAKE) --no-print-directory test-notebooks kernels=avx2

test-unit: $(STAMP)
	$(PY) -m pytest tests

test-notebooks: $(STAMP)
	@echo "nbval regression, $(kernels) kernels: $(KERNELS_$(kernels))"
	run=$$(mktemp -d) && $(KERNELS_$(kernels)) MER_STRICT_CHECKS=1 MER_RUN_DIR=$$run MER_FIGURES_DIR=$$run/figures \
	    $(PY) -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider notebooks; \
	    rc=$$?; rm -rf $$run; exit $$rc

# The committed notebooks are marked trusted first, so that their audio players and figures
# render (JupyterLab strips active output of untrusted notebooks).
lab: $(STAMP)
	$(VENV)/bin/jupyter trust notebooks/*.ipynb
	$(VENV)/bin/jupyter lab notebooks

clean-run:
	rm -rf $(run_dir)
