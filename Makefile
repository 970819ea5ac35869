# cohortflow: `make demo` runs the whole pipeline on a generated study; `make test` runs the tests.
# Both create the virtual environment and install everything on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data

export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/$(DATA)/prefect-home
export PREFECT_LOGGING_LEVEL ?= WARNING
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export MPLBACKEND := Agg

.PHONY: install demo test test-fast lint bench clean help server serve

PREFECT_PORT ?= 4200

help:
	@echo "make demo   generate a study, run the whole pipeline into SQLite, print where the report is"
	@echo "make test   run the test suite (PostgreSQL tests run when COHORTFLOW_TEST_DATABASE_URL is set)"
	@echo "make lint   ruff"
	@echo "make bench  run the benchmark scripts (figures go to benchmarks/RESULTS.md by hand)"
	@echo "make server a long-running Prefect server on 127.0.0.1:$(PREFECT_PORT) (see docs/operations.md)"
	@echo "make serve  register and serve the scheduled deployments (needs COHORTFLOW_PSEUDONYM_KEY)"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,dask]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/cohortflow demo --data-dir $(DATA)/demo

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .ruff_cache

server: install
	$(BIN)/cohortflow ops server --host 127.0.0.1 --port $(PREFECT_PORT)

serve: install
	PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api $(BIN)/cohortflow ops serve
