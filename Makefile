# tradestats — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_SOURCES := tradestats devtools bench tests
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.DEFAULT_GOAL := help
.PHONY: help install tools demo test test-unit lint format alert-rules bench bench-quick broker broker-stop brokers brokers-stop clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create .venv and install tradestats with its dev tools

# The deployment validators live in their own virtualenv: checkov's dependencies conflict
# with the project's pins. tests/deploy finds them in .local/tools/bin.
TOOLS := .local/tools
TOOLS_STAMP := $(TOOLS)/.installed-$(shell cat tests/deploy/requirements-tools.txt | sha1sum | cut -c1-12)

$(TOOLS_STAMP): tests/deploy/requirements-tools.txt
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet -r tests/deploy/requirements-tools.txt
	@rm -f $(TOOLS)/.installed-* && touch $@

tools: $(TOOLS_STAMP) ## Install the deployment validators (hadolint, check-jsonschema, kubernetes-validate, checkov)

demo: $(STAMP) ## Start a local Kafka broker, a worker and the load generator; print live stats
	$(BIN)/python -m devtools.demo

test: $(STAMP) $(TOOLS_STAMP) ## Run the whole test suite (starts its own Kafka broker)
	$(BIN)/pytest

test-unit: $(STAMP) ## Run only the broker-free tests
	$(BIN)/pytest tests/unit

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy

format: $(STAMP) ## Apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix $(PY_SOURCES)
	$(BIN)/ruff format $(PY_SOURCES)

alert-rules: $(STAMP) ## Regenerate the PrometheusRule of the prometheus-operator overlay from the alert rules
	$(BIN)/python -m devtools.prometheusrule

bench: $(STAMP) ## Benchmark tradestats against its peers (density sweep; ~100 min, ~16 without faust: --only a,c,d,d2,e); writes docs/benchmarks.md
	$(BIN)/python -m bench

bench-quick: $(STAMP) ## The benchmark's small form (the one CI runs), output in .local/bench/quick
	$(BIN)/python -m bench --quick

broker: $(STAMP) ## Start the local Kafka broker in .local/kafka (idempotent)
	$(BIN)/python -m devtools.kafka start

broker-stop: ## Stop the local Kafka broker
	$(BIN)/python -m devtools.kafka stop

brokers: $(STAMP) ## Start a three-node local Kafka cluster in .local/kafka3 (RF 3, min ISR 2)
	$(BIN)/python -m devtools.kafka start --nodes 3 --state-dir .local/kafka3

brokers-stop: ## Stop the three-node local Kafka cluster
	$(BIN)/python -m devtools.kafka stop --state-dir .local/kafka3

cluster-up: $(STAMP) ## Start the local Kubernetes cluster (compiled on first use, ~20 min; then ~1 min)
	$(BIN)/python -m devtools.kube up

cluster-down: $(STAMP) ## Stop the local Kubernetes cluster (pods deleted first, host settings restored)
	$(BIN)/python -m devtools.kube down

clean: ## Remove the virtualenv, local broker data and caches
	-$(BIN)/python -m devtools.kafka stop 2>/dev/null
	-test ! -d .local/kafka3 || $(BIN)/python -m devtools.kafka stop --state-dir .local/kafka3
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
