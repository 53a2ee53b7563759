# rmhgeoapi developer commands. `make test` sets everything up on a fresh machine and runs the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PG_BIN := /usr/lib/postgresql/15/bin
POSTGIS_CONTROL := /usr/share/postgresql/15/extension/postgis.control
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: setup test system-deps clean

setup: system-deps $(VENV)/.installed node_modules/.installed

# Debian packages the tests need: PostgreSQL 15 server and PostGIS 3 (pgSTAC is migrated by pypgstac).
system-deps:
	@missing=""; \
	[ -x $(PG_BIN)/initdb ] || missing="$$missing postgresql-15"; \
	[ -f $(POSTGIS_CONTROL) ] || missing="$$missing postgresql-15-postgis-3"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: requirements.txt requirements-dev.txt
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf .local .pytest_cache
