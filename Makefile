# smoker-infra: `make synth STACK=dev` (offline view), `make deps test` (all four tiers), `make up STACK=dev`.
STACK ?= dev
PYTHON ?= python3
VENV := venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv deps synth schema preview up lint test test-unit bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# System packages the tests need (tools/system-deps.sh: the tier-2 validators, then the Docker
# engine for the tier-3 test guest). Root only; idempotent; starts no service. `make test` never
# installs anything: run `make deps` once first (`.ci/run` does). Without them the validator tests
# fail naming the package and the tier-3 tests skip.
deps:
	@if [ "$$(id -u)" = 0 ]; then bash tools/system-deps.sh; \
	else echo "not root: skipping system packages (tier-3 tests will skip)"; fi

synth: venv
	$(BIN)/python -m tools.synth $(STACK)

# The stack files' JSON Schema and docs/configuration.md, generated from the config/ models.
schema: venv
	$(BIN)/python -m tools.schema

preview: venv
	pulumi preview --stack $(STACK) --diff

up: venv
	pulumi up --stack $(STACK)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m tools.schema --check
	$(BIN)/lint-imports --no-cache
	$(BIN)/yamllint --strict -d '{extends: default, rules: {line-length: {max: 140}, document-start: disable, comments: {min-spaces-from-content: 1}}}' Pulumi.yaml Pulumi.host.yaml Pulumi.dev.yaml Pulumi.prod.yaml

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit tests/static tests/sdk testbed/tests

test: venv lint
	$(BIN)/python -m pytest -q --durations=40

bench: venv
	$(BIN)/python -m tools.bench

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
