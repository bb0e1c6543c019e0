# distkit developer commands. `make demo` needs no servers; `make test` brings its own.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SERVICES := $(PY) infra/services.py
PYTEST_ARGS ?=
BENCH ?=

.PHONY: venv demo test bench docs lint services-up services-down services-status clean

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

# every benchmark (or `make bench BENCH="idgen locks"`), then bench/results/report.md and its PNG plots
bench: venv
	@trap '$(SERVICES) stop' EXIT; \
	$(SERVICES) start redis kafka postgres || exit 1; \
	set -a; . .services/env; set +a; \
	MPLBACKEND=Agg $(PY) -m bench $(BENCH)

# the docs site (mkdocs.yml: guides, API reference from docstrings, bench/results/) into site/; --strict: any
# warning (a broken link, a docstring griffe cannot read) fails the build
docs: venv
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

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
