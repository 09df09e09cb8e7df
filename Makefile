# Every command a person needs. `make help` lists them. `make run` and `make test` install what is
# missing first (Debian packages, uv, the pinned daprd); with everything present that takes a second.
.DEFAULT_GOAL := help
SHELL := /bin/bash
# pip installs uv here when it is missing and Python's own bin directory is not writable.
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: help prerequisites sync daprd jaeger run test lint format compose-check compose-test docs token admin-token

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

prerequisites: ## install what is missing: PostgreSQL, Redis, Prometheus, docker-compose, Chromium (Debian), uv (PyPI)
	@scripts/install-prerequisites

sync: prerequisites ## install the Python dependencies from uv.lock
	@uv sync --locked --quiet

daprd: ## build or reuse the pinned daprd (first build takes minutes)
	@scripts/install-daprd >/dev/null

jaeger: ## build or reuse the pinned Jaeger, the trace backend (first build takes minutes)
	@scripts/install-jaeger >/dev/null

run: sync daprd jaeger ## run the whole stack locally from dapr.yaml until Ctrl-C
	uv run --no-sync devstack up

test: sync daprd jaeger ## run every test against real PostgreSQL, Redis, daprd, Jaeger, Prometheus
	uv run --no-sync pytest

compose-test: sync daprd jaeger ## the compose demo for real: build, up --wait, e2e + browser tests, down -v
	scripts/compose-test

lint: ## ruff lint + format check, mypy
	uv run --no-sync ruff check .
	uv run --no-sync ruff format --check .
	uv run --no-sync mypy services/common/src services/catalog/src services/basket/src services/web/src scripts/devstack/src

compose-check: ## static checks of docker-compose.yml and the Dockerfile (no Docker needed)
	uv run --no-sync pytest tests/compose -q

format: ## apply ruff's fixes and formatting
	uv run --no-sync ruff check --fix .
	uv run --no-sync ruff format .

docs: ## copy the files that docs/ includes (component YAML...) into the Markdown again
	uv run --no-sync devstack docs

token: ## print a demo token: make token USER_ID=alice
	@uv run --no-sync mint-token $(or $(USER_ID),alice)

admin-token: ## print a demo token with the admin role
	@uv run --no-sync mint-token $(or $(USER_ID),admin) --admin
