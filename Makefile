# One entry point for people and CI. `make setup` is idempotent; `demo`/`test` run it when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps browser-deps demo dev test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v ffmpeg >/dev/null 2>&1 || $(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints/cpu.txt -e '.[dev]'
	touch $(STAMP)

# ffmpeg decodes everything; espeak-ng speaks the generated test and demo episodes.
system-deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg espeak-ng >/dev/null; \
	else \
		echo "ffmpeg (and espeak-ng for the demo/tests) are missing: install them with your package manager" >&2; exit 1; \
	fi

# Chromium opens the Dagster UI in the UI test (tests/pipeline/test_ui.py).
browser-deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium is missing (the UI test needs it): install it with your package manager" >&2; exit 1; \
	fi

demo: setup
	@command -v espeak-ng >/dev/null 2>&1 || $(MAKE) --no-print-directory system-deps
	$(BIN)/python -m citywok_pipeline.demo

# The Dagster UI and daemon on 127.0.0.1:3000 with the demo library; Ctrl-C stops it.
dev: setup
	@command -v espeak-ng >/dev/null 2>&1 || $(MAKE) --no-print-directory system-deps
	$(BIN)/python -m citywok_pipeline.devserver

test: setup
	@command -v espeak-ng >/dev/null 2>&1 || $(MAKE) --no-print-directory system-deps
	@command -v chromium >/dev/null 2>&1 || $(MAKE) --no-print-directory browser-deps
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check citywok_pipeline tests benchmarks
	$(BIN)/ruff format --check citywok_pipeline tests benchmarks
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .citywok .pytest_cache
