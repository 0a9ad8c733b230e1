# kundenwert: `make run` and `make test` work on a fresh machine by themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SPARK  := $(VENV)/.spark-installed

.PHONY: run test test-slow bench lint install postgres chromium java spark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Main job: a 20,000-customer sample world ending today (so "last 90 days", contact pressure and
## the scores agree with the calendar), imported into SQLite, summarised, every model trained,
## backtested, tracked in MLflow (var/mlflow.db) and promoted where it passes its gates, every
## customer scored, and the API and the web app (/app) serving on 127.0.0.1:8000 (demo keys and
## the app's URL printed; Ctrl-C stops).
run: $(STAMP)
	$(VENV)/bin/kundenwert sample var/sample --customers 20000 --seed 1 --end $$(date -u +%F)
	$(VENV)/bin/kundenwert import var/sample --mode replace
	$(VENV)/bin/kundenwert summary
	MLFLOW_DISABLE_TELEMETRY=true $(VENV)/bin/kundenwert train --report var/train-report.json
	MLFLOW_DISABLE_TELEMETRY=true $(VENV)/bin/kundenwert score
	MLFLOW_DISABLE_TELEMETRY=true $(VENV)/bin/kundenwert serve --demo --host 127.0.0.1 --port 8000

## PostgreSQL server binaries for the store tests (the tests start a private cluster).
postgres:
	@bash scripts/install-postgres.sh

## Chromium for the web app's browser tests (Debian package chromium; the tests skip without it).
chromium:
	@bash scripts/install-chromium.sh

## Java 17+ for the spark engine's tests (Debian default-jre-headless; they skip without it).
java:
	@bash scripts/install-java.sh

## The spark extra (pyspark) and Java for the tests marked spark; `make run` does not need them.
## A failed install never fails the build: the Spark tests skip and say why.
$(SPARK): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,spark]' && touch $(SPARK) \
	    || echo "pip could not install the spark extra; the Spark tests will be skipped" >&2

spark: $(SPARK) java

test: $(STAMP) postgres chromium spark
	MLFLOW_DISABLE_TELEMETRY=true $(PY) -m pytest -q -m "not slow"

## The suites marked slow (minutes each: several worlds trained, two service workers); CI runs them too.
test-slow: $(STAMP) postgres chromium spark
	MLFLOW_DISABLE_TELEMETRY=true $(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) bench/sample.py
	$(PY) bench/import.py
	$(PY) bench/features.py
	$(PY) bench/models.py
	$(PY) bench/train.py

## Style (ruff), the layers of the architecture (import-linter, contracts in pyproject.toml) and
## types (mypy on the package).
lint: $(STAMP)
	$(VENV)/bin/ruff check kundenwert tests bench
	$(VENV)/bin/ruff format --check kundenwert tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy kundenwert

clean:
	rm -rf $(VENV) var .pytest_cache
