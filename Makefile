# tradestats — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.DEFAULT_GOAL := help
.PHONY: help install demo test test-unit lint format broker broker-stop clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create .venv and install tradestats with its dev tools

demo: $(STAMP) ## Start a local Kafka broker, a worker and the load generator; print live stats
	$(BIN)/tradestats demo

test: $(STAMP) ## Run the whole test suite (starts its own Kafka broker)
	$(BIN)/pytest

test-unit: $(STAMP) ## Run only the broker-free tests
	$(BIN)/pytest tests/unit

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check tradestats tests
	$(BIN)/ruff format --check tradestats tests
	$(BIN)/mypy

format: $(STAMP) ## Apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix tradestats tests
	$(BIN)/ruff format tradestats tests

broker: $(STAMP) ## Start the local Kafka broker in .local/kafka (idempotent)
	$(BIN)/python -m tradestats.devbroker start

broker-stop: ## Stop the local Kafka broker
	$(BIN)/python -m tradestats.devbroker stop

clean: ## Remove the virtualenv, local broker data and caches
	-$(BIN)/python -m tradestats.devbroker stop 2>/dev/null
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
