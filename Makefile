# One entry point for people and CI. `make test` is what .ci/run calls.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: help venv test lint typecheck unit e2e demo bench bench-quick micro clean

help:
	@echo "make demo        start the gateway on config/demo.yaml with the bundled mock LLM"
	@echo "make test        create .venv if needed, install, run ruff + mypy --strict + lint-imports + pytest"
	@echo "                 (as root with apt-get, also installs wrk, nginx-light and redis-server)"
	@echo "make bench       full benchmark (~25 min) with the peer gateways Portkey and LiteLLM"
	@echo "                 (installed once under bench/.work/peers), then shared (Redis) vs local limits"
	@echo "                 (installs wrk/nginx/redis-server with apt-get when root)"
	@echo "make bench-quick a few-second run of every scenario"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check agw_fast tests bench deploy

typecheck: $(STAMP)
	$(BIN)/mypy --strict agw_fast
	$(BIN)/lint-imports

test: $(STAMP)
	@echo "make test: for the bench smoke test and shared limits, apt-get installs wrk, nginx-light and redis-server if missing (root only)"
	-@bash bench/ensure_tools.sh || true
	$(BIN)/ruff check agw_fast tests bench deploy
	$(BIN)/mypy --strict agw_fast
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e

demo: $(STAMP)
	$(BIN)/agw-fast demo

bench: $(STAMP)
	bash bench/ensure_tools.sh
	$(BIN)/python bench/run.py --peer all
	$(BIN)/python -m bench.shared_limits_bench

bench-quick: $(STAMP)
	bash bench/ensure_tools.sh
	$(BIN)/python bench/run.py --quick
	$(BIN)/python -m bench.shared_limits_bench --quick

micro: $(STAMP)
	$(BIN)/python -m bench.micro

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench/.work
