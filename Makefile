PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck mosquitto postgres bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

venv: $(STAMP)

## make demo: the whole product on embedded defaults (ARGS="--approve yes --json" to answer unattended)
demo: $(STAMP)
	$(BIN)/aiotflow demo $(ARGS)

## Mosquitto is what the tests run against; installed from Debian when missing.
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing mosquitto (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	else \
	  echo "Mosquitto is missing. Install it, then run make test again:"; \
	  echo "    sudo apt-get update && sudo apt-get install -y mosquitto"; \
	  exit 1; \
	fi

## PostgreSQL: the tests initdb and start their own clusters (the many-worker state)
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing postgresql (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
	  echo "PostgreSQL is missing. Install it, then run make test again:"; \
	  echo "    sudo apt-get update && sudo apt-get install -y postgresql"; \
	  exit 1; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .

## mypy sees the aiotflow.* layout through a tree of links (see .ci/typecheck.py)
typecheck: $(STAMP)
	$(BIN)/python .ci/typecheck.py

## make test: lint, type-check, then the whole suite against a real Mosquitto and PostgreSQL
test: $(STAMP) mosquitto postgres lint typecheck
	$(BIN)/pytest -q --durations=15

bench: $(STAMP) mosquitto postgres
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache .mypy_cache *.egg-info .aiotflow
