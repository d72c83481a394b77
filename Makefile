# Two commands on a fresh machine: `make demo` and `make test`. Each bootstraps .venv from the pinned
# requirements-dev.txt (runtime lock requirements.txt + test tools; uv, from PyPI); state lives under .mlops/
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.8
STATE := $(CURDIR)/.mlops

export MLOPS_STATE_DIR ?= $(STATE)
export AIRFLOW_HOME ?= $(MLOPS_STATE_DIR)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := False
export AIRFLOW__API__HOST ?= 127.0.0.1
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN ?= sqlite:///$(AIRFLOW_HOME)/airflow.db
export GX_ANALYTICS_ENABLED := False
export DO_NOT_TRACK := 1
export PYTHONPATH := $(CURDIR)/include
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Every process (Airflow's, each task's, each training run's) imports the same ~4,000 modules: they are read
# from bytecode compiled once, at install (--compile-bytecode) and on first import, never recompiled from
# source each time. A machine that sets PYTHONDONTWRITEBYTECODE would pay that compile in every process.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help venv demo test test-fast lint typecheck airflow mlflow-ui clean lock config-reference bench new-model backfill

help:
	@echo "make demo   - bootstrap, then run the pipeline end to end on the embedded default"
	@echo "make test   - bootstrap, then lint, type-check and run every test (JUnit: test-results/junit.xml)"
	@echo "make bench  - benchmarks at 100k/1M/5M rows (BENCH_ARGS=...); writes bench/results.{json,md,png}"
	@echo "make new-model SAMPLE=x.csv NAME=m - starter config from a sample; make backfill MODEL=m START=d END=d"
	@echo "make airflow / make mlflow-ui - open the UIs on the same state; make clean - remove .mlops/"

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements-dev.txt
	echo "$(CURDIR)/include" > $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mlops_include.pth
	touch $@

lock: $(STAMP)
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements.in -o requirements.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements-dev.in -o requirements-dev.txt

demo: $(STAMP)
	$(BIN)/python -m mlops_dev.demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check dags include plugins tests feature_repo deploy
	$(BIN)/ruff format --check dags include plugins tests feature_repo deploy
	$(BIN)/mypy
	$(BIN)/python -m mlops.core.config --check

# The browser test drives Debian's Chromium (never a downloaded browser); installed here where missing.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	@echo "installing Debian's chromium for tests/browser/"
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

# Two pytest-xdist workers: one takes the production-stack group (one stack, started once), the other the
# embedded-default tests; most integration tests wait on Airflow's processes, so two share two cores well.
PYTEST_WORKERS ?= 2

test: $(STAMP) $(CHROMIUM) lint
	mkdir -p test-results
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --junitxml=test-results/junit.xml -p no:cacheprovider --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" -p no:cacheprovider

airflow: $(STAMP)
	$(BIN)/airflow db migrate >/dev/null
	@echo "Airflow UI on http://127.0.0.1:8080 (admin password: $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated)"
	$(BIN)/airflow standalone

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLOPS_STATE_DIR)/mlflow/mlflow.db --host 127.0.0.1 --port 5000

# Not part of `make test` (tests/bench/ runs a small smoke version). See README "Performance" for timings.
bench: $(STAMP)
	$(BIN)/python -m mlops_dev.bench $(BENCH_ARGS)

config-reference: $(STAMP)
	$(BIN)/python -m mlops.core.config --markdown

# A starter config inferred from a sample: make new-model SAMPLE=path/to/sample.csv NAME=my_model [LABEL=col]
new-model: $(STAMP)
	$(BIN)/python -m mlops.data.onboard "$(SAMPLE)" --name "$(NAME)" $(if $(LABEL),--label "$(LABEL)") $(if $(SENSITIVE),--sensitive "$(SENSITIVE)")

# Every landed day from START to END (inclusive) in one process: make backfill MODEL=credit_risk START=2026-03-01 END=2026-03-10
backfill: $(STAMP)
	$(BIN)/python -m mlops.data.backfill "$(MODEL)" "$(START)" "$(END)"

clean:
	rm -rf $(STATE) test-results
