# rmhgeoapi developer commands. `make test` sets everything up on a fresh machine and runs the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
# One venv per Python: .venv for the default, .venv-python3.12 for `make test PYTHON=python3.12`.
VENV ?= $(if $(filter python3.11,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
# The Pythons `make test-matrix` runs the whole suite on (Azure Functions supports all three).
MATRIX ?= python3.11 python3.12 python3.13
PY := $(VENV)/bin/python
PG_BIN := /usr/lib/postgresql/15/bin
POSTGIS_CONTROL := /usr/share/postgresql/15/extension/postgis.control
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# Extra arguments of the benchmark targets, e.g. `make bench-raster BENCH_ARGS="--cases bytes"`.
BENCH_ARGS ?=
# The catalog's consumers (tests/consumers): their own venv, STAC Browser built into a cache
# outside the clone (RMH_CONSUMERS_CACHE, default ~/.cache/rmhgeoapi), Debian's Chromium.
CONSUMERS_VENV := .venv-consumers
CONSUMERS_PY := $(CONSUMERS_VENV)/bin/python
CHROMIUM := /usr/bin/chromium

# Containers whose blob changes `make serve` delivers to the app's Event Grid functions.
WATCH ?=

.PHONY: setup test test-matrix package lock check-infra tools system-deps clean demo serve bench-runtime bench-raster bench-convert bench-catalog bench-sync bench-scale bench-multidim bench-tiles gdal-bin \
	consumers chromium stac-browser

setup: system-deps $(VENV)/.installed node_modules/.installed tools consumers

# Debian packages the tests need: PostgreSQL 15 server and PostGIS 3 (pgSTAC is migrated by
# pypgstac), and gdal-bin (gdal_translate / gdalwarp: the reference tools some tests compare with).
system-deps:
	@missing=""; \
	[ -x $(PG_BIN)/initdb ] || missing="$$missing postgresql-15"; \
	command -v gdalwarp >/dev/null || missing="$$missing gdal-bin"; \
	[ -f $(POSTGIS_CONTROL) ] || missing="$$missing postgresql-15-postgis-3"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# $(PYTHON) is looked up through pyenv when pyenv has it but does not put it on PATH
# (python3.12 / python3.13 beside a python3.11 default), else on PATH.
$(VENV)/.installed: requirements.txt requirements-lock.txt requirements-dev.txt
	@[ -x $(PY) ] || { \
	  exe=$$(v=$$(pyenv whence $(PYTHON) 2>/dev/null | tail -1); \
	         [ -n "$$v" ] && PYENV_VERSION=$$v pyenv which $(PYTHON) 2>/dev/null || command -v $(PYTHON)); \
	  [ -n "$$exe" ] || { echo "$(PYTHON) not found (install it, or pass PYTHON=...)" >&2; exit 1; }; \
	  echo "creating $(VENV) with $$exe"; "$$exe" -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Tool venvs (checkov) live in the user's cache, keyed on their requirements file, so a clean
# clone (CI) reuses them; tests/tools.py builds one when it is missing.
tools: $(VENV)/.installed
	@$(PY) tests/tools.py checkov >/dev/null

# stac-fastapi-pgstac, titiler-pgstac, pystac-client, planetary-computer (.venv-consumers), STAC
# Browser (npm, built once per version/config) and Chromium with playwright-core (node_modules).
consumers: chromium $(CONSUMERS_VENV)/.installed node_modules/.installed stac-browser

chromium:
	@[ -x $(CHROMIUM) ] || { echo "installing Debian packages: chromium"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

$(CONSUMERS_VENV)/.installed: requirements-consumers.txt
	[ -x $(CONSUMERS_PY) ] || $(PYTHON) -m venv $(CONSUMERS_VENV)
	$(CONSUMERS_PY) -m pip install -q --upgrade pip
	$(CONSUMERS_PY) -m pip install -q -r requirements-consumers.txt
	touch $@

# A no-op when the build for this version and configuration is in the cache.
stac-browser: $(VENV)/.installed
	$(PY) tests/consumers.py build-stac-browser

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The whole suite on every Python of MATRIX, each in its own venv; a summary line per Python.
test-matrix: system-deps node_modules/.installed
	@mkdir -p .local; status=0; \
	for py in $(MATRIX); do \
	  echo "== $$py"; \
	  $(MAKE) --no-print-directory test PYTHON=$$py 2>&1 | tee .local/matrix-$$py.log; \
	  [ $${PIPESTATUS[0]} -eq 0 ] || status=1; \
	done; \
	echo "== test-matrix"; \
	for py in $(MATRIX); do \
	  printf '%s: %s\n' "$$py" "$$(grep -E '^=+ .*(passed|failed|error).* in ' .local/matrix-$$py.log | tail -1 | tr -d '=')"; \
	done; \
	exit $$status

# The zip that is deployed: the root with .funcignore applied (requirements.txt and its lock for the
# remote build), plus the dashboard's npm files. azd deploys the same files (its prepackage hook).
package: $(VENV)/.installed
	$(PY) deploy.py package

# requirements-lock.txt: every package requirements.txt installs, pinned per Python (3.11-3.13, found
# on PATH or through pyenv), kept where the current pins still fit; LOCK_ARGS=--upgrade for the newest.
LOCK_ARGS ?=
lock: $(VENV)/.installed
	$(PY) deploy.py lock $(LOCK_ARGS)

# Bicep parse, checkov against infra/checkov-suppressions.toml, docs and settings against the Bicep.
check-infra: $(VENV)/.installed
	$(PY) -m pytest tests/test_infra.py -q

# The main job on embedded defaults: a generated sample raster (plus FILES="a.tif b.tif") through
# cog_conversion, process_tiled_raster and sync_container, with progress, on the local runtime.
demo: $(VENV)/.installed
	$(PY) cli.py demo $(FILES)

# The app over HTTP on 127.0.0.1:7071 with the embedded runtime (Ctrl-C to stop);
# `make serve WATCH="rasters"` also emulates Event Grid blob events for those containers.
serve: $(VENV)/.installed
	$(PY) cli.py serve --port 7071 $(foreach c,$(WATCH),--watch $(c))

# Debian's gdal-bin: the reference tools (gdal_translate, gdalwarp) the raster benchmark measures.
gdal-bin:
	@command -v gdal_translate >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq gdal-bin; }

bench-runtime: $(VENV)/.installed
	$(PY) benchmarks/bench_runtime.py

bench-raster: $(VENV)/.installed gdal-bin
	$(PY) benchmarks/bench_raster.py $(BENCH_ARGS)

# cog_conversion of 100 files on the embedded runtime vs `xargs -P <cores> gdal_translate -of COG`.
bench-convert: $(VENV)/.installed gdal-bin
	$(PY) benchmarks/bench_convert.py $(BENCH_ARGS)

# cubes.py on a NetCDF-4 of 365 daily 1440x720 grids and a GRIB2 of 4 variables x 8 steps, slice groups in a
# process pool (one worker per core), vs gdal_translate -of COG of each slice (shell loop and xargs -P);
# BENCH_ARGS="--days 30" for a quick run.
bench-multidim: $(VENV)/.installed gdal-bin
	$(PY) benchmarks/bench_multidim.py $(BENCH_ARGS)

# Warm 256² preview tiles of the demo DEM and 8-bit RGB imagery at three zooms: the app's route vs
# rio-tiler's Reader.tile in the same run (BENCH_ARGS="--tiles 8 --repeats 3" for a quick run).
bench-tiles: $(VENV)/.installed
	$(PY) benchmarks/bench_tiles.py $(BENCH_ARGS)

bench-catalog: setup
	$(PY) benchmarks/bench_catalog.py

# FILES=5000 for another size; the 10k/20k/50k cases: `benchmarks/bench_sync.py --scale`.
bench-sync: setup
	$(PY) benchmarks/bench_sync.py --files $(or $(FILES),1000)

# The scale goals of #26, each phase on request: PHASES=cpu,segments,dry,pages (default all; the
# full sizes, 100,000 files and a million blobs, take hours). Smaller: BENCH_ARGS="--large 5000
# --dry-blobs 50000 --items 10000".
bench-scale: setup
	$(PY) benchmarks/bench_scale.py $(if $(PHASES),--phases $(PHASES)) $(BENCH_ARGS)

clean:
	rm -rf .local .pytest_cache dist
