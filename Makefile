# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
# GPU=1 installs tensorflow[and-cuda] instead of tensorflow-cpu.
SYNC_FLAGS := $(if $(GPU),--no-group cpu --group gpu,)
# Test modules run in parallel, each whole in one worker (its module fixtures shared): ~18.5 min on 2 cores, not ~45.
PYTEST_ARGS ?= -n auto --maxprocesses 4 --dist loadfile

.PHONY: setup browser java demo test test-unit load up bench lint clean

$(UV):
	@echo "uv not found: installing it into ~/.local/bin"
	python3 -m pip install --user --quiet uv || (curl -LsSf https://astral.sh/uv/install.sh | sh)

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on our CI machines) every `ratchet` command and
# Airflow task would otherwise recompile botocore, urllib3 and dateutil each time it starts.
setup: $(UV)
	$(UV) sync --frozen --compile-bytecode $(SYNC_FLAGS)

# The UI tests drive Debian's Chromium (never a browser downloaded by a test tool); installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "chromium not found: installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }; \
	  else sudo apt-get install -y -q chromium; fi; }

# The spark engine (data sets declared `engine: spark`) and its tests need Java 17: Debian's package when missing.
java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "java not found: installing Debian's openjdk-17-jre-headless for the spark engine"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q openjdk-17-jre-headless >/dev/null || { apt-get update -q && apt-get install -y -q openjdk-17-jre-headless; }; \
	  else sudo apt-get install -y -q openjdk-17-jre-headless; fi; }

demo: setup
	$(UV) run --frozen --no-sync ratchet demo

test: setup browser java
	$(UV) run --frozen --no-sync pytest $(PYTEST_ARGS)

# 20 nightly_retrain runs triggered at once, on the embedded default and on the production profile (needs
# PostgreSQL and Redis on 127.0.0.1): 15-25 min on 2 cores, past the suite's budget, so `make test` leaves them out.
load: setup
	$(UV) run --frozen --no-sync pytest -m load -n 2 --dist loadfile

test-unit: setup
	$(UV) run --frozen --no-sync pytest -m "not integration" $(PYTEST_ARGS)

up: setup
	$(UV) run --frozen --no-sync ratchet up

bench: setup java
	TOPICS="$(TOPICS)" $(UV) run --frozen --no-sync python bench/run_all.py

lint: setup
	$(UV) run --frozen --no-sync ruff check .
	$(UV) run --frozen --no-sync mypy ml_tasks

clean:
	rm -rf .ratchet
