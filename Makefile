# Two commands do everything on a fresh machine: `make report` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ARGS ?=

.PHONY: report quick test test-all lint install browser clean-reports

$(VENV)/.installed: requirements.txt requirements-nodeps.txt requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt -r requirements-test.txt
	$(PIP) install --quiet --no-deps -r requirements-nodeps.txt
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
	$(VENV)/bin/ruff check scenelib tests notebooks run_all.py
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check scenelib tests notebooks run_all.py
	$(VENV)/bin/ruff format --check scenelib tests notebooks run_all.py

# Headless Chromium and its driver for the report's browser test (Debian packages, needs root).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)

clean-reports:
	find reports -mindepth 1 -not -name README.md -delete
