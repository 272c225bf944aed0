# Two commands do everything on a fresh machine: `make report` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ARGS ?=

.PHONY: report quick test test-all lint install browser clean-reports lab

$(VENV)/.installed: requirements.txt requirements-nodeps.txt requirements-test.txt requirements-ray.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt -r requirements-test.txt -r requirements-ray.txt
	$(PIP) install --quiet --no-deps -r requirements-nodeps.txt
	@was=$$($(PY) -I -c "import scenelib, pathlib; print(pathlib.Path(scenelib.__file__).resolve().parent.parent)" \
	  2>/dev/null); if [ -n "$$was" ] && [ "$$was" != "$(CURDIR)" ]; then \
	  echo "note: $(VENV) served scenelib from $$was; it now serves this checkout, $(CURDIR)"; fi
	$(PIP) install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The main job: the full UC Merced report (set SCENELIB_DATA_DIR or pass ARGS="--data-dir DIR").
report: install
	$(PY) run_all.py --dataset ucmerced $(ARGS)

quick: install
	$(PY) run_all.py --dataset ucmerced --quick $(ARGS)

# The test suite: unit tests, real papermill execution end to end on tiny data, slow tests on real data
# when SCENELIB_DATA_DIR points at UC Merced, and the browser check when Chromium is installed.
test: install
	$(VENV)/bin/ruff check scenelib tests notebooks benchmarks docs run_all.py
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check scenelib tests notebooks benchmarks docs run_all.py
	$(VENV)/bin/ruff format --check scenelib tests notebooks benchmarks docs run_all.py

# JupyterLab from the project's venv; .py notebooks open as notebooks on double-click. The settings live in
# the venv (JupyterLab's application overrides.json and user settings), never in the user's home.
# LAB_ARGS="--no-browser --port 8899" etc.
LAB_DIR := $(abspath $(VENV))/share/jupyter/lab
LAB_ARGS ?=
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
# A relative SCENELIB_RUN_DIR is read from the folder `make lab` was started in (SCENELIB_START_DIR).
lab: install
	$(VENV)/bin/jupytext-config --settings-file $(LAB_DIR)/settings/overrides.json set-default-viewer python
	SCENELIB_START_DIR="$(CURDIR)" \
	JUPYTERLAB_SETTINGS_DIR=$(LAB_DIR)/user-settings JUPYTERLAB_WORKSPACES_DIR=$(LAB_DIR)/workspaces \
	  $(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) $(LAB_ROOT) $(LAB_ARGS)

# Headless Chromium and its driver for the report's browser test (Debian packages, needs root).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)

clean-reports:
	find reports -mindepth 1 -not -name README.md -delete
