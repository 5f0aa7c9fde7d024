# Two commands for a fresh machine: `make run` and `make test` (both install what is missing).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install chromium system-deps run test lint typecheck pytest bench clean

install: $(STAMP)

# Re-install whenever the lock file or the project metadata changes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Headless Chromium for the /docs browser test (Debian package; needs root or sudo).
chromium:
	sh devstack/ensure_chromium.sh
# Debian packages the tests need: a PostgreSQL server for the Dagster-on-PostgreSQL e2e tests
# (apt-get as root when missing; a no-op when installed).
system-deps:
	bash .ci/install-postgresql

run: install
	$(BIN)/python -m devstack

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy export_pipelines export_api devstack bench

pytest: install chromium system-deps
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
