# Two set-up commands: `make demo` runs a campaign end to end, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
# Two workers per database suite: most of an end-to-end test is waiting (for a window, a poll, a
# resume), so two overlap on two cores; each worker is its own session with its own server. The two
# database suites run one after the other: side by side (four workers, four servers on two cores) they
# were no quicker on a slow machine and left the timing-sensitive end-to-end tests too little headroom.
PYTEST_ARGS ?= -n 2 --dist worksteal --durations=15

.PHONY: demo test test-sqlite test-postgres stop server install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/notiflow demo

server: $(STAMP)
	$(BIN)/notiflow server

stop:
	@if [ -x $(BIN)/notiflow ]; then $(BIN)/notiflow stop; else echo "nothing to stop"; fi

test: $(STAMP)
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-kannel.sh
	$(MAKE) --no-print-directory test-sqlite test-postgres

test-sqlite: $(STAMP)
	NOTIFLOW_TEST_DATABASE=sqlite $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-postgres: $(STAMP)
	NOTIFLOW_TEST_DATABASE=postgresql NOTIFLOW_TEST_POSTGRES_URL=$(PG_URL) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/controls.py

clean: stop
	rm -rf .notiflow
