# distkit developer commands. `make demo` needs no servers; `make test` brings its own.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SERVICES := $(PY) infra/services.py
PYTEST_ARGS ?=

.PHONY: venv demo test bench lint services-up services-down services-status clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all,dev,demo]"
	@touch $@

venv: $(VENV)/.installed

# every reference app on embedded defaults (no servers); one of them with `make demo APP=flash_sale`
demo: venv
	$(PY) -m examples $(APP)

# Start Redis, a 3-master Redis Cluster, PostgreSQL and Kafka; run the suite against them; always stop them.
test: venv
	@set -o pipefail; \
	trap '$(SERVICES) stop' EXIT; \
	$(SERVICES) start || exit 1; \
	set -a; . .services/env; set +a; \
	DISTKIT_REQUIRE_SERVICES=1 $(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	@trap '$(SERVICES) stop' EXIT; \
	$(SERVICES) start redis kafka postgres || exit 1; \
	set -a; . .services/env; set +a; \
	$(PY) -m bench

# ruff on every Python tree; mypy --strict on the library and on the examples (code written the way users write it)
lint: venv
	$(VENV)/bin/ruff check distkit tests bench examples infra
	$(VENV)/bin/mypy --strict distkit examples

services-up: venv
	$(SERVICES) start

services-down:
	$(SERVICES) stop

services-status:
	$(SERVICES) status

clean: services-down
	rm -rf $(VENV) .services .pytest_cache .mypy_cache .ruff_cache .hypothesis
