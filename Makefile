# Two commands for a fresh machine: `make run` and `make test` (both install what is missing).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
S3RVER := devstack/s3rver
S3RVER_STAMP := $(S3RVER)/node_modules/.installed

.PHONY: install chromium libreoffice openssh system-deps run test lint typecheck pytest bench clean

install: $(STAMP) $(S3RVER_STAMP)

# Re-install whenever the lock file or the project metadata changes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# `make run`'s local S3 server: s3rver, pinned by its package-lock.json (npm ci), on Node.js and npm
# from Debian when they are missing (devstack/ensure_node.sh; root or sudo).
$(S3RVER_STAMP): $(S3RVER)/package.json $(S3RVER)/package-lock.json
	sh devstack/ensure_node.sh
	cd $(S3RVER) && npm ci --no-audit --no-fund --loglevel=error
	touch $(S3RVER_STAMP)

# Headless Chromium for the /docs browser test (Debian package; needs root or sudo).
chromium:
	sh devstack/ensure_chromium.sh
# Headless LibreOffice Calc for the xlsx format tests, which open the workbooks with a real spreadsheet
# engine (Debian package `libreoffice-calc`; needs root or sudo).
libreoffice:
	sh devstack/ensure_libreoffice.sh
# The OpenSSH server for the SFTP destination tests, which run sshd of their own on a loopback port (Debian
# package `openssh-server`; needs root or sudo).
openssh:
	sh devstack/ensure_openssh.sh
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
	$(BIN)/mypy export_core export_pipelines export_api export_cli devstack bench

pytest: install chromium libreoffice openssh system-deps
	$(BIN)/python -m pytest -q --durations=25

test: lint typecheck pytest

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache $(S3RVER)/node_modules
